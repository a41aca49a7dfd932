"""The benchmark's measuring pieces, on tiny problems (seconds; the real runs are the script's)."""

import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402
import benchmark  # noqa: E402
from bench import (  # noqa: E402
    checkers_scale,
    common,
    cost_law,
    first_result,
    large_data,
    peak,
    research_models,
    timing,
    validate,
)

import functional_nn as fnn  # noqa: E402


def test_sub_millisecond_calls_are_timed_k_at_a_time_with_one_wait():
    assert timing.calls_per_sample(2e-3) == 1
    assert timing.calls_per_sample(1e-4) == 100
    assert timing.calls_per_sample(0.0) == 1000
    f = jax.jit(lambda x: x + 1)
    r = timing.interleaved({"f": f, "g": f}, jnp.ones(3), pairs=3)
    assert r["k"]["f"] > 1 and r["rounds"] >= 3
    assert set(r) == {"s", "ratio", "k", "times", "rounds"}
    assert all(len(t) == r["rounds"] for t in r["times"].values())


def test_interleaved_ratios_are_per_round_against_the_first():
    def slow():
        time.sleep(0.015)

    def fast():
        time.sleep(0.003)

    r = timing.interleaved({"fast": fast, "slow": slow}, pairs=3, budget_s=0.0)
    assert r["rounds"] == 3 and r["k"] == {"fast": 1, "slow": 1}
    assert r["ratio"]["fast"] == 1.0
    assert 1.5 < r["ratio"]["slow"] < 10  # 5, give or take a loaded machine's sleeps
    p = timing.paired(slow, fast, pairs=3, budget_s=0.0)
    assert set(p) == {"a_s", "b_s", "ratio"} and 1.5 < p["ratio"] < 10


def test_slow_calls_get_fewer_rounds_within_max_s():
    def slow():
        time.sleep(0.02)

    r = timing.interleaved({"slow": slow}, pairs=10, max_s=0.1, warm=False)
    assert 3 <= r["rounds"] <= 5  # 10 asked, 0.1 s allowed, 0.02 s a round


def test_the_dot_peak_is_labelled_with_its_precision_and_size():
    p = peak.dot_peak(jnp.float32, "highest", max_n=128)
    assert p["precision"] == "highest" and p["n"] == 128 and p["gflops"] > 0
    assert peak.dot_peak(jnp.float32, None, max_n=64)["precision"] == "default"


def test_cold_env_empties_the_cache_and_forces_simulated_devices_onto_the_cpu(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_foo=1")
    env = common.cold_env(devices=4, JAX_LOG_COMPILES="1")
    assert env["JAX_PLATFORMS"] == "cpu" and env["JAX_LOG_COMPILES"] == "1"
    assert env["XLA_FLAGS"].split() == ["--xla_foo=1", "--xla_force_host_platform_device_count=4"]
    assert list(Path(env["JAX_COMPILATION_CACHE_DIR"]).iterdir()) == []
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert "JAX_PLATFORMS" not in common.cold_env()  # a cold process keeps the device
    assert common.cold_env(cache=False)["JAX_ENABLE_COMPILATION_CACHE"] == "false"


def test_compilations_are_counted_from_jax_0_10_log_lines():
    log = "\n".join(
        [
            "Compiling jit(f) with global shapes and types (f32[3],). Argument mapping: (U,).",
            "Finished XLA compilation of jit(f) in 0.500000000 sec",
            "Compiling jit(g) with global shapes and types (f32[3],). Argument mapping: (U,).",
            "Persistent compilation cache hit for 'jit_g' with key 'abc'",
            "Finished XLA compilation of jit(g) in 0.010000000 sec",
            "Finished XLA compilation of jit(h) in 2.000000000 sec",
        ]
    )
    c = validate.count_compilations(log)
    assert (c["compilations"], c["cache_hits"], c["lowerings"]) == (2, 1, 2)
    assert c["compile_s"] == pytest.approx(2.51)
    assert c["slowest"][0] == "jit(h) 2.0 s"


def test_the_installed_jax_logs_the_lines_that_are_counted():
    code = "import jax, jax.numpy as jnp; jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3))"
    env = common.cold_env(JAX_LOG_COMPILES="1", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    c = validate.count_compilations(r.stdout + r.stderr)
    assert r.returncode == 0 and c["compilations"] >= 1 and c["lowerings"] >= 1, r.stderr


def test_factor_entries_of_the_lecture_network():
    # layer 1: dh/dw (3, 12), dh/dh_prev (3, 4), dh/dz (3, 3); layer 2: (2, 6), (2, 3), (2, 2);
    # dJ/dy_hat (1, 2)
    assert common.factor_entries(fnn.Network((4, 3, 2))) == 36 + 12 + 9 + 12 + 6 + 4 + 2


def test_the_python_loop_computes_the_central_difference_columns():
    net = fnn.Network((3, 2, 1), hidden="tanh")
    params, x, y = common.problem(net, "bce", 5, jnp.float64)
    columns = cost_law.python_loop(net, "bce", params, x, y, columns=4)()
    J = fnn.objective(net, "bce")
    grads = jax.flatten_util.ravel_pytree(jax.grad(J)(params, x, y))[0]
    np.testing.assert_allclose(np.array(columns), grads[:4], rtol=1e-6)


def test_the_large_data_benchmark_times_fit_against_the_hand_written_scan():
    # (PyTorch left out: importing it takes seconds; the benchmark's runs exercise it)
    r = large_data.bench_large_data(512, 6, 1, 32, sizes=(16, 8, 4), max_s=0.0, torch=False)
    assert (r["N"], r["steps"], r["rounds"], r["torch_s"]) == (512, 6, 1, None)
    assert r["fit_over_handwritten"] > 0 and np.isfinite(r["fit_final_loss"])


def test_first_result_rows_split_lowering_compile_and_first_call():
    nets = [first_result.FIRST_NETWORKS[0]]
    rows = first_result.first_result_rows(nets, ("backprop",))
    (r,) = rows
    assert r["method"] == "backprop" and r["P"] == 18
    assert 0 < r["lower_s"] and 0 < r["compile_s"] and r["first_call_s"] >= r["compile_s"]
    assert r["warm_ms"] > 0


def speed_table_sections() -> list[str]:
    """The section names of the Speed page's table (docs/speed.md), in its order."""
    page = (ROOT / "docs" / "speed.md").read_text()
    speed = page.split("\n## The benchmark\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", speed, re.M)


def test_the_speed_page_table_names_every_section_of_the_registry_in_order():
    assert speed_table_sections() == list(bench.NAMES) == [s.name for s in bench.SECTIONS]
    assert len(bench.NAMES) == 15


def test_only_and_skip_accept_exactly_the_speed_table_sections():
    names = speed_table_sections()
    for name in names:
        assert benchmark.parse(["--only", name])[1] == [name]
        assert benchmark.parse(["--skip", name])[1] == [n for n in names if n != name]
    assert benchmark.parse([])[1] == names
    assert benchmark.parse(["--only", ",".join(reversed(names))])[1] == names  # runs in order
    for wrong in ("nope", "peak,nope", "Peak", ""):
        with pytest.raises(SystemExit):
            benchmark.parse(["--only", wrong])
    with pytest.raises(SystemExit):
        benchmark.parse(["--skip", "nope"])


def test_every_worker_is_a_function_of_a_section_module():
    assert set(bench.WORKERS) == {
        "first_result",
        "first_check",
        "checker",
        "locate",
        "data_parallel",
        "compile_setting",
        "probes",
    }
    assert all(f.__module__.startswith("bench.") for f in bench.WORKERS.values())


# (P, leaves) of every model of the checkers_scale section, from the builders' shapes alone
RESEARCH_SIZES = {
    "mlp 256x4": (263_168, 8),
    "mlp 512x4": (1_050_624, 8),
    "mlp 256x16": (1_052_672, 32),
    "transformer 1M": (990_848, 41),
    "transformer 10M": (9_996_800, 101),
    "transformer tiny": (16_992, 17),
}


def test_the_research_models_have_the_sizes_the_section_reports():
    assert set(research_models.MODELS) == set(RESEARCH_SIZES)
    for name, build in research_models.MODELS.items():
        params = jax.eval_shape(lambda build=build: build()[1])
        assert research_models.size(params) == RESEARCH_SIZES[name], name
        assert {a.dtype for a in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    assert set(checkers_scale.FULL_MODELS) - set(checkers_scale.QUICK_MODELS) == {"transformer 10M"}


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_a_planted_bug_alters_only_the_leaf_it_names(model):
    with jax.numpy_rank_promotion("allow"):  # research code broadcasts its biases
        if model == "mlp":
            f, params = research_models.tanh_mlp(8, 3, batch=4)
        else:
            f, params = research_models.transformer(**research_models.TINY)
        assert f(params).dtype == jnp.float32
        g = jax.jit(jax.grad(f))(params)  # compiled: op by op, the transformer took 6 s
        paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(g)[0]]
        bugs = research_models.bug_leaves(params)
        assert set(bugs) == set(research_models.KINDS) and set(bugs.values()) <= set(paths)
        for kind, path in bugs.items():
            wrong = jax.jit(research_models.plant(f, params, kind, path))(params)
            changed = [
                p
                for p, a, b in zip(
                    paths,
                    jax.tree_util.tree_leaves(g),
                    jax.tree_util.tree_leaves(wrong),
                    strict=True,
                )
                if not np.array_equal(a, b)
            ]
            assert changed == [path], kind
    with pytest.raises(ValueError, match="no leaf at"):
        research_models.plant(f, params, "sign", "['nope']")
    with pytest.raises(ValueError, match="square"):
        research_models.plant(f, params, "transpose", bugs["zero"])
    with pytest.raises(ValueError, match="kind must be"):
        research_models.plant(f, params, "flip", bugs["zero"])


def test_check_grad_names_each_planted_leaf_and_check_grads_gets_the_planted_rule():
    with jax.numpy_rank_promotion("allow"):
        f, params = research_models.tanh_mlp(8, 3, batch=4)
        assert checkers_scale._check_grad(f, params, None) == {"ok": True, "failing": []}
        assert checkers_scale._check_grads(f, params, None) == {"ok": True}
        for kind, path in research_models.bug_leaves(params).items():
            wrong = research_models.plant(f, params, kind, path)
            assert checkers_scale._check_grad(f, params, wrong)["failing"] == [path], kind
            rule = jax.grad(checkers_scale._with_grad(f, wrong))(params)
            for a, b in zip(
                jax.tree_util.tree_leaves(rule),
                jax.tree_util.tree_leaves(wrong(params)),
                strict=True,
            ):
                np.testing.assert_array_equal(a, b)
        # one random projection: a whole-leaf bug may pass it, a negated gradient cannot
        negated = lambda p: jax.tree_util.tree_map(jnp.negative, jax.grad(f)(p))  # noqa: E731
        verdict = checkers_scale._check_grads(f, params, negated)
        assert not verdict["ok"] and "cotangent projection" in verdict["error"]
