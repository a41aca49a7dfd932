"""The screen (functional_nn/checking/_screen.py): leaves tested in groups along directions
that move a whole group, f in float64, and only the leaves of failing groups checked leaf by
leaf. Oracles: jax.grad (right gradients), planted whole-leaf bugs, and what the leaf-by-leaf
engine says of the same tree."""

import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import functional_nn as fnn
from functional_nn.checking import _screen

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from bench import research_models  # noqa: E402


def _float32(tree):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), tree)


@pytest.fixture(scope="module")
def transformer():
    """A float32 transformer of 17 leaves and 17k parameters, screened when told."""
    with jax.numpy_rank_promotion("allow"):
        f, params = research_models.transformer(**research_models.TINY)
    return f, params


def _check(f, params, **kw):
    with jax.numpy_rank_promotion("allow"):
        return fnn.check_grad(f, params, screen=True, **kw)


def test_a_right_transformer_gradient_passes_in_groups_with_several_seeds(transformer):
    f, params = transformer
    for seed in (0, 1, 2):
        report = _check(f, params, key=jax.random.key(seed))
        assert report.ok, str(report)
        assert "screened: 17 leaves passed in 1 groups" in report.description, report.description
        assert "checked leaf by leaf: none" in report.description
        assert report.reference == "central (float64)"
        assert [r.method for r in report.rows] == ["grad"] * 17  # one row per leaf, no taylor
        assert {r.evaluations for r in report.rows} == {8}  # 2 directions x 4 points


@pytest.mark.parametrize("kind", research_models.KINDS)
def test_a_whole_leaf_bug_is_split_out_and_failed_alone(transformer, kind):
    f, params = transformer
    path = research_models.bug_leaves(params)[kind]
    with jax.numpy_rank_promotion("allow"):
        grad = research_models.plant(f, params, kind, path)
    report = _check(f, params, grad=grad, taylor=False)
    assert {r.leaf for r in report.failures} == {path}, str(report)
    assert f"checked leaf by leaf: {path}" in report.description, report.description


def test_two_wrong_leaves_of_the_same_kind_do_not_cancel(transformer):
    """Two layer-norm biases with their signs flipped: equal terms of opposite sign would
    cancel in a group of equal terms; random signs and sizes keep them apart."""
    f, params = transformer
    wrong = ("['blocks'][0]['ln1']['bias']", "['blocks'][0]['ln2']['bias']")

    def grad(p):
        g = jax.grad(f)(p)
        return jax.tree_util.tree_map_with_path(
            lambda q, a: -a if jax.tree_util.keystr(q) in wrong else a, g
        )

    for seed in range(8):  # terms of equal size cancelled for seeds 6 and 7
        report = _check(f, params, grad=grad, taylor=False, key=jax.random.key(seed))
        assert {r.leaf for r in report.failures} == set(wrong), str(report)


def test_a_small_leaf_beside_a_large_one_is_not_swamped():
    """A 10-entry leaf whose gradient is 1e5 times smaller than a 20,000-entry leaf's: every
    leaf's term in the group is of the same size, so its sign flip shows."""
    k1, k2 = jax.random.split(jax.random.key(2))
    params = _float32({"big": jax.random.normal(k1, (20_000,)),
                       "small": jax.random.normal(k2, (10,))})  # fmt: skip

    def f(p):
        return 1e5 * jnp.sum(jnp.sin(p["big"])) + jnp.sum(jnp.sin(p["small"]))

    def grad(p):
        g = jax.grad(f)(p)
        return {**g, "small": -g["small"]}

    assert fnn.check_grad(f, params, screen=True, taylor=False).ok
    report = fnn.check_grad(f, params, grad=grad, screen=True, taylor=False)
    assert {r.leaf for r in report.failures} == {"['small']"}, str(report)


def test_a_leaf_of_zero_gradient_is_checked_alone_and_passes():
    """A leaf f does not use has a zero gradient, right: its term is zero, so the screen
    hands it to the leaf-by-leaf engine, which passes it."""
    params = _float32({"w": jnp.linspace(-1, 1, 300), "unused": jnp.ones(5),
                       "b": jnp.linspace(0, 1, 40), "c": jnp.ones(3)})  # fmt: skip

    def f(p):
        return jnp.sum(jnp.tanh(p["w"]) ** 2) + jnp.sum(p["b"] ** 3) * jnp.sum(p["c"])

    report = fnn.check_grad(f, params, screen=True)
    assert report.ok, str(report)
    assert "checked leaf by leaf: ['unused']" in report.description, report.description


def test_f_that_cannot_run_in_float64_is_checked_leaf_by_leaf():
    """The screen needs f in float64; an f that stays float32 (it casts) or refuses float64
    is checked leaf by leaf, with the same verdicts."""
    params = _float32({"w": jnp.linspace(-1, 1, 50), "b": jnp.linspace(0, 1, 8),
                       "c": jnp.ones(3), "d": jnp.ones(2)})  # fmt: skip

    def casts(p):
        return sum(jnp.sum(jnp.sin(a.astype(jnp.float32))) for a in p.values())

    def refuses(p):
        if p["w"].dtype != jnp.float32:
            raise TypeError("float32 only")
        return casts(p)

    for f in (casts, refuses):
        report = fnn.check_grad(f, params, screen=True)
        assert report.ok and "screened" not in report.description, report.description
        assert "screen not used: f does not evaluate in float64 as itself" in report.description

        def scaled(p, f=f):
            g = jax.grad(f)(p)
            return {**g, "b": 1.05 * g["b"]}

        wrong = fnn.check_grad(f, params, screen=True, grad=scaled)
        assert {r.leaf for r in wrong.failures} == {"['b']"}, str(wrong)


def test_f_that_is_another_function_in_float64_gives_no_false_failure():
    """Noise drawn in the parameters' dtype makes f in float64 another function; where the
    two agree to 1e-3 the screen runs, fails, and the leaf-by-leaf engine, in f's own dtype,
    passes every leaf: the screen never fails a leaf itself."""
    params = _float32({"w": jnp.linspace(-1, 1, 64), "b": jnp.linspace(0, 1, 8),
                       "c": jnp.ones(3), "d": jnp.ones(2)})  # fmt: skip

    def f(p):
        noise = jax.random.normal(jax.random.key(0), (64,), p["w"].dtype)
        base = sum(jnp.sum(jnp.sin(a)) for a in p.values())
        return base + 1e-5 * jnp.sum(noise * p["w"])

    report = fnn.check_grad(f, params, screen=True)
    assert report.ok, str(report)


def test_screening_is_the_default_above_its_threshold_only():
    n = _screen.SCREEN_ABOVE // 4 + 1
    params = _float32({name: jnp.linspace(-1, 1, n) + i for i, name in enumerate("abcd")})

    def f(p):
        return sum(jnp.sum(jnp.sin(a) * (i + 1)) for i, a in enumerate(p.values()))

    big = fnn.check_grad(f, params)
    assert big.ok and "screened: 4 leaves passed" in big.description, big.description
    assert "screened" not in fnn.check_grad(f, params, screen=False).description
    small = {k: v[:100] for k, v in params.items()}
    assert "screened" not in fnn.check_grad(f, small).description
    assert _screen.screening(None, _screen.SCREEN_ABOVE + 1, 3) is False  # too few leaves


def test_the_screen_reads_back_only_numbers_per_leaf(transformer, host_reads):
    """Directions are drawn and applied on the device: what comes back are the candidate's
    terms (one per leaf), the leaves' scales and values of f, never a P-sized array."""
    f, params = transformer
    with jax.numpy_rank_promotion("allow"):
        line = _screen._Line(f, jax.tree_util.tree_leaves(params),
                             jax.tree_util.tree_structure(params))  # fmt: skip
        g = jax.tree_util.tree_leaves(jax.grad(f)(params))
        host_reads.clear()
        found = _screen._Bisection(line, g, "float32", (0,), ["x"] * 17, None).run()
    assert not found.suspects and len(found.rows) == 17
    assert host_reads and max(host_reads) <= 17, host_reads


@pytest.mark.heavy
@settings(max_examples=3)
@given(
    widths=st.lists(st.integers(2, 12), min_size=3, max_size=6),
    which=st.integers(0, 100),
    kind=st.sampled_from(["scale", "sign", "zero"]),
)
def test_random_mlps_with_one_wrong_leaf_name_it_alone(widths, which, kind):
    """Random tanh MLPs, float32, one leaf planted (5% scale, sign, zero): the screen splits
    it out and the leaf-by-leaf engine fails it, no other leaf."""
    keys = jax.random.split(jax.random.key(len(widths) + which), len(widths))
    params = [_float32({"W": jax.random.normal(k, (m, n)) / np.sqrt(n),
                        "b": 0.1 * jax.random.normal(k, (m,))})
              for k, n, m in zip(keys, widths[:-1], widths[1:], strict=False)]  # fmt: skip
    x = jnp.linspace(-1, 1, 4 * widths[0], dtype=jnp.float32).reshape(4, widths[0])

    def f(p):
        h = x
        for layer in p:
            h = jnp.tanh(h @ layer["W"].T + layer["b"][None, :])
        return jnp.mean(h**2)

    paths = [f"[{i}]['{n}']" for i in range(len(params)) for n in ("W", "b")]
    path = paths[which % len(paths)]
    grad = research_models.plant(f, params, kind, path)
    report = fnn.check_grad(f, params, grad=grad, screen=True, taylor=False)
    assert {r.leaf for r in report.failures} == {path}, str(report)


X64_OFF = textwrap.dedent(
    """
    import jax, jax.numpy as jnp
    import functional_nn as fnn
    params = {n: jnp.linspace(-1.0, 1.0, 50) + i for i, n in enumerate("abcd")}
    f = lambda p: sum(jnp.sum(jnp.sin(a) ** 2) for a in p.values())
    right = fnn.check_grad(f, params, screen=True)
    wrong = fnn.check_grad(f, params, screen=True,
                           grad=lambda p: {**jax.grad(f)(p), "c": -jax.grad(f)(p)["c"]})
    print(right.ok, sorted({r.leaf for r in wrong.failures}), jax.config.jax_enable_x64,
          jnp.zeros(1).dtype, "screened: 4 leaves" in right.description)
    """
)


def test_the_screen_runs_in_float64_with_x64_off_and_leaves_it_off(tmp_path):
    """A user's process with x64 off (JAX's default): the screen traces f in float64 inside
    jax.enable_x64 and the process's setting is as it was afterwards."""
    env = {"JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(tmp_path), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", X64_OFF], capture_output=True, text=True,
                         timeout=300, env=env, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["True", "[\"['c']\"]", "False", "float32", "True"], out.stdout


def test_a_pattern_or_a_custom_rule_at_the_top_is_checked_leaf_by_leaf_and_says_so():
    params = _float32({n: jnp.linspace(-1, 1, 20) + i for i, n in enumerate("abcd")})

    def f(p):
        return sum(jnp.sum(jax.nn.relu(a) ** 2) for a in p.values())

    kinks = fnn.check_grad(f, params, screen=True, pattern=lambda p: p["a"] > 0)
    assert kinks.ok and "screen not used: a pattern" in kinks.description, kinks.description

    @jax.custom_vjp
    def g(p):
        return f(p)

    g.defvjp(lambda p: (f(p), p), lambda p, ct: (jax.tree_util.tree_map(
        lambda a: ct * a, jax.grad(f)(p)),))  # fmt: skip
    rule = fnn.check_grad(g, params, screen=True)
    assert rule.ok and "screen not used: a custom rule at the top" in rule.description


def test_an_unhashable_callable_is_checked_screened_and_leaf_by_leaf():
    """A callable object that cannot be a static argument (``__hash__ = None``) is compiled
    for its own check, screened or not."""
    params = _float32({n: jnp.linspace(-1, 1, 30) + i for i, n in enumerate("abcd")})

    class Loss:
        __hash__ = None

        def __call__(self, p):
            return sum(jnp.sum(jnp.sin(a) ** 2) for a in p.values())

    for screen in (True, False):
        report = fnn.check_grad(Loss(), params, screen=screen, taylor=False)
        assert report.ok and ("screened" in report.description) == screen, report.description
