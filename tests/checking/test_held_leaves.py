"""Trees as research code holds them: the inexact-array leaves are checked, every other leaf
(a function, an integer array, a PRNG key, a Python number) is held fixed and named."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_nn as fnn

HELD = ["['act']", "['key']", "['n']", "['step']"]


def state(dtype="float64"):
    w = jnp.asarray([0.5, -1.0, 2.0], dtype)
    return {"w": w, "step": jnp.array(3), "key": jax.random.key(0), "n": 3, "none": None,
            "act": jnp.tanh}  # fmt: skip


def f(p):
    return jnp.sum(p["act"](p["w"]) * p["n"])


def right(p):
    g = p["n"] * (1 - jnp.tanh(p["w"]) ** 2)
    return {"w": g, "step": None, "key": None, "n": None, "none": None, "act": None}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float_leaves_are_checked_and_the_rest_held_and_named(dtype):
    report = fnn.check_grad(f, state(dtype))
    assert report.ok, str(report)
    assert {r.leaf for r in report.rows} == {"['w']"}
    assert "held fixed (not inexact arrays): " + ", ".join(HELD) in report.description
    vjp = fnn.check_vjp(lambda p: p["act"](p["w"]) * p["n"], state(dtype))
    assert vjp.ok and {r.leaf for r in vjp.rows} == {"['w']"}
    assert ", ".join(HELD) in vjp.description


def test_a_users_gradient_may_hold_none_or_zeros_there_and_a_wrong_one_is_named():
    assert fnn.check_grad(f, state(), grad=right).ok

    def zeros(p):
        return {**right(p), "step": jnp.zeros((), int), "n": 0}

    assert fnn.check_grad(f, state(), grad=zeros).ok
    report = fnn.check_grad(f, state(), grad=lambda p: {**right(p), "w": 1.01 * right(p)["w"]})
    assert {r.leaf for r in report.failures} == {"['w']"}
    with pytest.raises(TypeError, match="the gradient has another tree structure than params"):
        fnn.check_grad(f, state(), grad=lambda p: {"w": right(p)["w"]})


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Dense:  # as an Equinox module holds a layer: arrays and its activation, all leaves
    weight: jax.Array
    bias: jax.Array
    act: object


def test_a_module_with_a_function_leaf_is_checked_under_its_own_paths():
    key1, key2 = jax.random.split(jax.random.key(1))
    layers = [Dense(jax.random.normal(key1, (4, 3)), jnp.zeros(4), jax.nn.gelu),
              Dense(jax.random.normal(key2, (1, 4)), jnp.zeros(1), jnp.tanh)]  # fmt: skip
    x = jnp.linspace(-1.0, 1.0, 3)

    def loss(model):
        h = x
        for layer in model:
            h = layer.act(layer.weight @ h + layer.bias)
        return jnp.sum(h**2)

    report = fnn.check_grad(loss, layers)
    assert report.ok, str(report)
    assert {r.leaf for r in report.rows} == {"[0].weight", "[0].bias", "[1].weight", "[1].bias"}
    assert "[0].act, [1].act" in report.description

    def wrong(model):
        g = jax.grad(lambda arrays: loss(_with(model, arrays)))(_arrays(model))
        g[1]["weight"] = -g[1]["weight"]
        return [Dense(a["weight"], a["bias"], None) for a in g]

    failing = {r.leaf for r in fnn.check_grad(loss, layers, grad=wrong).failures}
    assert failing == {"[1].weight"}


def _arrays(model):
    return [{"weight": m.weight, "bias": m.bias} for m in model]


def _with(model, arrays):
    return [Dense(a["weight"], a["bias"], m.act) for m, a in zip(model, arrays, strict=True)]


def test_no_float_leaf_and_a_16_bit_leaf_get_errors_that_tell_the_truth():
    with pytest.raises(ValueError, match=r"no floating-point array leaf to check \(held: "):
        fnn.check_grad(lambda p: 0.0, {"step": jnp.array(3), "key": jax.random.key(0)})
    # a float16 leaf is judged against its program in float64 (issue 34), by all three
    half = jnp.ones(2, jnp.float16)
    for report in (
        fnn.check_grad(lambda p: jnp.sum(p.astype(jnp.float32) ** 2), half),
        fnn.check_vjp(lambda p: p.astype(jnp.float32) ** 2, half),
        fnn.check_jvp(lambda p: p.astype(jnp.float32) ** 2, half),
    ):
        assert report.ok and "parameters float16" in report.description, report
    with pytest.raises(ValueError, match="float16, and its float64 reference cannot be made"):
        fnn.check_vjp(lambda p: jax.lax.bitcast_convert_type(p, jnp.int16) * 1.0, half)


def test_a_repeated_check_of_the_same_tree_finds_its_compiled_programs():
    """The held leaves are put back by a wrapper equal to the next call's (same function,
    same structure, the same held leaves): jax.jvp's program is compiled once, not per call.
    A held NumPy array is keyed by its value (it can change in place), a function by itself."""
    from functional_nn.checking import _jvp_check
    from functional_nn.checking._leaves import hold, through

    p = state()

    def g(q):
        return q["act"](q["w"]) * q["n"]

    fnn.check_jvp(g, p)
    hits = _jvp_check._push_program.cache_info().hits
    assert fnn.check_jvp(g, p).ok
    assert _jvp_check._push_program.cache_info().hits > hits
    same = through(hold(p, "t"), g)
    assert same == through(hold(dict(p), "t"), g) and hash(same) == hash(through(hold(p, "t"), g))
    assert same != through(hold(state(), "t"), g)  # a new step counter and key: JAX arrays by id
    assert same != through(hold({**p, "act": jnp.sin}, "t"), g)  # another function held
    assert same != through(hold(p, "t"), lambda q: g(q))  # another function checked
    counts = {**p, "n": np.array([3])}
    before = through(hold(counts, "t"), g)
    assert before == through(hold({**p, "n": np.array([3])}, "t"), g)
    counts["n"][0] = 4  # changed in place: another tree, whatever its identity
    assert before != through(hold(counts, "t"), g)
