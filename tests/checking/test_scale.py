"""The checkers at research scale: memory bounded by one batch of evaluations (never leaves
times parameters), a transformer's right gradient passing leaf by leaf,
the evaluations per leaf bounded, and progress reported through a callback. Whole-leaf bugs
in a transformer, split out by the screen and failed leaf by leaf: test_screen.py."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import functional_nn as fnn
from functional_nn.checking._progress import Progress
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from bench import research_models  # noqa: E402

RSS_BOUND_MB = 1000
"""The resident memory a check of 2.1M parameters in 64 leaves may reach, the process and
JAX included (measured: 438 MB leaf by leaf, 544 MB screened: float64 copies of the
parameters, of a direction and of its terms, 2 cores, jax 0.10.2, the script of
MEMORY_CHECK run by hand, 2026-12-03). The engine before issue 19 drew (k * L, P) =
(1024, 2.1M) directions in float64: 17 GB."""

MEMORY_CHECK = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import jax
    import functional_nn as fnn
    from bench import research_models
    f, params = research_models.tanh_mlp(256, 32, batch=8)
    P, L = research_models.size(params)
    report = fnn.check_grad(f, params, taylor=False, screen=sys.argv[2] == "screen")
    # VmHWM, the peak of this process's own memory (ru_maxrss keeps the forking parent's)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak = int(status.split()[0]) / 1024  # kB -> MB
    evals = [r.evaluations for r in report.rows]
    print(json.dumps({"P": P, "L": L, "ok": report.ok, "peak_mb": peak, "rows": len(evals),
                      "max_evals": max(evals), "screened": "screened" in report.description}))
    """
)


@pytest.mark.heavy
@pytest.mark.parametrize("path", ["screen", "leaf by leaf"])
def test_a_check_of_two_million_parameters_in_64_leaves_stays_under_a_memory_bound(tmp_path, path):
    env = {"JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path), "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHECK, str(ROOT / "scripts"), path],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["P"] == 32 * (256 * 256 + 256) and result["L"] == 64
    assert result["ok"] and result["rows"] == 64
    assert result["peak_mb"] < RSS_BOUND_MB, result
    assert result["screened"] == (path == "screen"), result
    # k = 4 random directions per leaf, central differences: 4 evaluations each (16),
    assert result["max_evals"] <= 48, result  # and the retry of an unresolved leaf: 3 chunks


@pytest.fixture(scope="module")
def transformer():
    with jax.numpy_rank_promotion("allow"):
        f, params = research_models.transformer(d_model=48, n_layers=3, vocab=96, seq=16,
                                                batch=4)  # fmt: skip
    P, L = research_models.size(params)
    assert P > DIRECTIONAL_ABOVE and L >= 40
    return f, params


@pytest.mark.heavy
def test_a_transformers_right_gradient_passes_leaf_by_leaf(transformer):
    """Every leaf's rows, the Taylor ones included (P < SCREEN_ABOVE: leaf by leaf); several
    seeds and whole-leaf bugs of a transformer: test_screen.py."""
    f, params = transformer
    with jax.numpy_rank_promotion("allow"):
        report = fnn.check_grad(f, params, key=jax.random.key(1))
    assert report.ok, str(report)
    assert "screened" not in report.description
    assert {r.method for r in report.rows} == {"grad", "taylor"}


def test_progress_reaches_the_callback_leaf_by_leaf_and_counts_every_evaluation():
    params = {"a": jnp.linspace(-1, 1, 30_000), "b": jnp.array([0.3, 0.2])}

    def f(p):
        return jnp.sum(jnp.sin(p["a"])) + jnp.sum(p["b"] ** 3)

    seen: list[Progress] = []
    report = fnn.check_grad(f, params, callback=seen.append)
    assert report.ok and seen
    assert all(isinstance(p, Progress) and p.leaves == 2 for p in seen)
    assert [p.leaf for p in seen] == sorted(p.leaf for p in seen)  # leaf a, then leaf b
    assert {p.leaf for p in seen} == {"['a']", "['b']"}
    assert {p.index for p in seen} == {0, 1}
    counts = [p.evaluations for p in seen]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)  # one call per batch
    assert counts[-1] == sum(r.evaluations or 0 for r in report.rows)
    assert {p.stage for p in seen} <= {"ladder", "complex step", "central"}
    vjp_seen: list[Progress] = []
    assert fnn.check_vjp(lambda p: jnp.sin(p["b"]), params, callback=vjp_seen.append).ok
    assert vjp_seen and vjp_seen[-1].evaluations > 0


@pytest.mark.parametrize("check", [fnn.check_grad, fnn.check_vjp], ids=["grad", "vjp"])
def test_a_bad_callback_or_budget_is_refused(check):
    x = jnp.ones(3)
    g = (lambda t: jnp.sum(t**2)) if check is fnn.check_grad else (lambda t: t**2)
    with pytest.raises(TypeError, match="callback must be callable"):
        check(g, x, callback=3)
    with pytest.raises(ValueError, match="memory_budget"):
        check(g, x, memory_budget=0)
    with pytest.raises(TypeError, match="memory_budget"):
        check(g, x, memory_budget=1.5)
    # a budget of one byte is a chunk of one point: slower, and the same verdict
    assert check(g, x, memory_budget=1).ok
