"""The scripts run end to end, in their own processes, and mean what they exit with."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, **kw):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, **kw
    )


def test_validate_passes_and_writes_json(tmp_path):
    out = tmp_path / "v.json"
    r = _run(
        "scripts/validate.py",
        "--sizes",
        "4,3,2",
        "--hidden",
        "relu",
        "--output",
        "identity",
        "--bias",
        "--batch",
        "5",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    assert data["ok"] is True
    assert {row["method"] for row in data["rows"]} == {
        "backprop", "jacobian_chain", "finite_differences", "complex_step",
        "local_finite_differences", "sympy",
    }  # fmt: skip
    assert all(row["loss"] == "mse" and row["error"] <= row["tolerance"] for row in data["rows"])
    evaluations = {row["method"]: row["evaluations"] for row in data["rows"]}
    assert evaluations["finite_differences"] == 2 * (4 * 3 + 3 + 3 * 2 + 2)
    assert "6 passed, 0 failed" in r.stdout


def test_validate_exits_1_when_a_method_is_broken(tmp_path):
    # run validate.main with backprop's bias gradient zeroed: the check must catch it
    code = textwrap.dedent(
        """
        import sys
        sys.argv = ["validate.py", "--sizes", "3,4,2", "--bias", "--batch", "4"]
        sys.path.insert(0, "scripts")
        import validate

        correct = validate.METHODS["backprop"]

        def broken(*args, **kwargs):
            J, g = correct(*args, **kwargs)
            return J, (g[0]._replace(b=0 * g[0].b),) + g[1:]

        validate.METHODS["backprop"] = broken
        sys.exit(validate.main())
        """
    )
    r = _run("-c", code)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout and "5 passed, 1 failed" in r.stdout


@pytest.fixture(scope="module")
def validate():
    """scripts/validate.py as a module (its arguments are parsed before any work); scripts/
    stays on the path meanwhile, for the worker processes that import it by name."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import validate

    yield validate
    sys.path.remove(str(ROOT / "scripts"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sizes", "4,0"], "sizes must hold at least two positive ints"),
        (["--methods", "nope"], "unknown ['nope']"),
        (["--sizes", "4,3", "--output", "identity", "--loss", "cross_entropy"],
         "--loss cross_entropy needs --output softmax"),
        (["--seed", "-1", "--sizes", "4,2"], "--seed must be >= 0"),
        (["--hidden", "relu"], "--hidden describe one network: give it with --sizes"),
        (["--jobs", "0"], "--jobs must be >= 1; got 0"),
    ],
)  # fmt: skip
def test_validate_rejects_bad_options(validate, argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        validate.parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_validate_keeps_the_checks_executables_unless_told_not_to(tmp_path):
    # a fresh cache folder for each run: on a jaxlib without the repair option (0.6, 0.7) a
    # program served from JAX's own cache is not kept, so the second run must compile anew
    argv = ["scripts/validate.py", "--sizes", "3,2", "--batch", "4", "--methods", "backprop"]
    for flag, folder in (("--no-executable-cache", tmp_path / "off"), (None, tmp_path / "on")):
        env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(folder)}
        r = _run(*argv, *([flag] if flag else []), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        kept = list((folder / "functional_nn-executables").glob("*.exe"))
        assert bool(kept) is (flag is None), (flag, kept)
        assert list(folder.iterdir())  # XLA's programs are kept either way


def test_validate_exits_2_on_bad_options_from_the_command_line():
    r = _run("scripts/validate.py", "--sizes", "4,0")
    assert r.returncode == 2 and "sizes must hold at least two positive ints" in r.stderr


def test_validate_shares_its_networks_among_processes_with_the_same_rows(validate):
    suite = [
        ("a", dict(sizes=(3, 2)), "bce", (0,), (4,)),
        ("b", dict(sizes=(2, 3, 1), hidden="relu", output="identity"), "mse", (1,), (None,)),
    ]
    methods = {m: validate.METHODS[m] for m in ("backprop", "finite_differences")}
    alone = validate.run_suite(suite, methods, None, jobs=1)
    shared = validate.run_suite(suite, methods, None, jobs=2)  # two fresh processes
    assert [rows for rows, _ in shared] == [rows for rows, _ in alone]  # the same bits
    assert [len(reports) for _, reports in shared] == [1, 1]  # (their texts hold timings)
    assert [row["network"] for rows, _ in shared for row in rows] == ["a"] * 2 + ["b"] * 2


def test_validate_says_so_when_a_worker_dies_instead_of_waiting_for_it(validate, monkeypatch):
    """A worker whose XLA aborts (here on a flag it does not know, set by the user) breaks
    the pool: an error, where multiprocessing.Pool would wait for its lost network for ever."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_functional_nn_no_such_flag=true")  # workers inherit
    suite = [("a", dict(sizes=(3, 2)), "bce", (0,), (4,)), ("b", dict(sizes=(2, 1)), "bce", (0,),
             (4,))]  # fmt: skip
    methods = {"backprop": validate.METHODS["backprop"]}
    with pytest.raises(validate.WorkerDiedError, match="--jobs 1"):
        validate.run_suite(suite, methods, None, jobs=2)


def test_validate_checks_a_softmax_network_with_cross_entropy():
    r = _run("scripts/validate.py", "--sizes", "3,4,3", "--output", "softmax", "--batch", "4",
             "--methods", "backprop,finite_differences")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cross_entropy" in r.stdout and "2 passed, 0 failed" in r.stdout


def test_validate_checks_its_output_path_before_any_work(tmp_path):
    r = _run("scripts/validate.py", "--json", str(tmp_path / "missing" / "out.json"))
    assert r.returncode == 2, r.stdout + r.stderr  # a usage error, not "gradients disagree"
    assert "the folder" in r.stderr and "does not exist" in r.stderr
    assert "passed" not in r.stdout  # nothing was checked


def test_importing_the_library_imports_no_sympy_and_changes_no_setting():
    code = textwrap.dedent(
        """
        import sys, jax
        settings = lambda: (jax.config.jax_enable_x64, jax.config.jax_numpy_rank_promotion)
        before = settings()
        import functional_nn
        assert settings() == before, (before, settings())
        bad = [m for m in ("sympy", "matplotlib", "sklearn", "rich", "tqdm") if m in sys.modules]
        assert not bad, bad
        """
    )
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr


def test_benchmark_pieces_run_and_report_every_network():
    """The benchmark's pieces on tiny networks (the real run takes minutes; see its --quick)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import jax.numpy as jnp
    from bench.chain import bench_jacobian_chain
    from bench.methods import bench_methods
    from bench.timing import paired

    rows = bench_methods(
        [("tiny", dict(sizes=(4, 3, 1)), "bce", 8), ("wide", dict(sizes=(6, 5, 2)), "mse", 4)],
        jnp.float32,
        pairs=2,
    )
    assert [r["network"] for r in rows] == ["tiny", "wide"]
    assert all(r["backprop_over_autodiff"] > 0 and r["backprop_gflops"] > 0 for r in rows)
    chain = bench_jacobian_chain(jnp.float32, pairs=2, batch=10)
    assert chain["jacobian_chain_peak_bytes"] > 0 and chain["jacobian_chain_over_autodiff"] > 0
    r = paired(lambda: 1.0, lambda: 2.0, pairs=3)
    assert set(r) == {"a_s", "b_s", "ratio"}


def test_benchmark_counts_the_flops_a_gradient_needs():
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench.methods import gradient_flops

    from functional_nn import Network

    # lecture net: forward 2(12 + 6), weight gradients 2(12 + 6), input gradient of layer 2 only 2*6
    assert gradient_flops(Network((4, 3, 2)), batch=1) == 2 * (2 * 18 + 6)
    assert gradient_flops(Network((4, 1)), batch=10) == 10 * 2 * 2 * 4


@pytest.mark.heavy
def test_figures_writes_the_eps_study_and_the_taylor_picture(tmp_path):
    r = _run("scripts/figures.py", "--out", str(tmp_path), "--skip-cost", "--only-eps")
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("eps_study.png", "taylor_check.png"):
        png = (tmp_path / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "'forward': 1.0" in r.stdout and "'central': 2.0" in r.stdout
    assert "Taylor orders {\"['b']\": 1.0, \"['w']\": 2.0}" in r.stdout  # wrong b, right w


def test_derive_check_passes_on_the_committed_record():
    r = _run("scripts/derive.py", "--check")
    assert r.returncode == 0, r.stderr


def test_a_float64_check_without_x64_is_refused_not_run_in_float32():
    code = textwrap.dedent(
        """
        import jax, functional_nn as fnn
        net = fnn.Network((3, 2))
        params = net.init(jax.random.key(0))
        x, y = jax.numpy.ones((4, 3)), jax.numpy.ones((4, 2))
        try:
            fnn.check_gradients(net, "bce", params, x, y, dtype="float64")
        except ValueError as err:
            print(err)
        """
    )
    r = _run("-c", code)
    assert "x64 mode is off" in r.stdout and "jax_enable_x64" in r.stdout, r.stdout + r.stderr


def test_check_model_locates_a_planted_leaf_and_writes_its_verdict(tmp_path):
    out = tmp_path / "verdict.json"
    r = _run("scripts/check_model.py", "--model", "mlp 256x4", "--plant", "scale",
             "--no-taylor", "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    verdict = json.loads(out.read_text())
    assert verdict["ok"] and verdict["leaves"] == 8 and len(verdict["failing"]) == 1
    assert "as expected" in r.stdout and "peak host memory" in r.stdout


def test_check_model_and_lax_suite_refuse_unknown_names():
    r = _run("scripts/check_model.py", "--model", "resnet")
    assert r.returncode == 2 and "--model must be one of" in r.stderr
    r = _run("scripts/lax_suite.py", "--ops", "sinh,nope")
    assert r.returncode == 2 and "unknown ops ['nope']" in r.stderr


def test_lax_suite_passes_right_ops_and_catches_their_plants():
    r = _run("scripts/lax_suite.py", "--ops", "sinh,atan2", "--seeds", "1", "--dtypes", "float32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "false failures: 0 of 6 checks of right ops" in r.stdout  # three checkers
    assert "plants missed or mislocated: 0 of 18" in r.stdout
    assert "locate: 0 false of 2, 0 plants missed of 6" in r.stdout


def test_symbolic_table_measures_and_names_where_accuracy_is_lost(tmp_path):
    out = tmp_path / "t.json"
    r = _run("scripts/symbolic_table.py", "--only", "relu,sigmoid", "--dtypes", "float32",
             "--json", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert " ok" in lines["relu"] and "FAILED" in lines["sigmoid"]
    assert "d1 16.71: jax 0, exact 5.5416976" in lines["sigmoid"]  # grad(sigmoid)(16.7) == 0
    rows = json.loads(out.read_text())
    assert [(row["function"], row["ok"]) for row in rows] == [("relu", True), ("sigmoid", False)]
    r = _run("scripts/symbolic_table.py", "--only", "nope")
    assert r.returncode == 2 and "unknown functions" in r.stderr
