"""Research models as they are (issue 20, item 1), with the real libraries: an Equinox MLP and a
small Equinox CNN, as modules and as ``eqx.partition``ed params, flax linen variables, a flax
nnx module and its ``nnx.split`` State. Each passes check_grad in float32 and float64 under the
tree's own paths, its non-array leaves held and named; a gradient wrong in one weight (jax.grad's
with that one leaf scaled) fails on that leaf and no other. check_vjp and check_jvp take an
Equinox module among the primals the same way."""

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen, nnx

import functional_nn as fnn

DTYPES = ["float32", "float64"]
OFF = 1.05  # the planted bug: one leaf of jax.grad's gradient 5% too large
# NumPy data, and models built on first use: collecting this module (in every xdist worker)
# costs no JAX dispatch
X = np.random.default_rng(1).standard_normal((4, 3))  # a batch of 4 inputs of size 3
IMAGES = np.random.default_rng(2).standard_normal((2, 1, 6, 6))  # 2 one-channel 6x6 images


def _dtype(tree):
    return jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))[0].dtype


def _cast(tree, dtype):
    """``tree`` with its inexact arrays in ``dtype``, every other leaf as it was."""
    return jax.tree_util.tree_map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a,
                                  tree)  # fmt: skip


def _paths(tree) -> set[str]:
    """The paths of the inexact-array leaves, by Equinox's own filter (not the library's)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p) for p, leaf in flat if eqx.is_inexact_array(leaf)}


def _oracle(f, tree):
    """jax.grad of ``f`` over the inexact arrays of ``tree``: ``None`` at every other leaf, as
    Equinox's own gradients have it."""
    params, static = eqx.partition(tree, eqx.is_inexact_array)
    return jax.grad(lambda p: f(eqx.combine(p, static)))(params)


def _scaled(tree, leaf: str):
    """``tree`` with the leaf at path ``leaf`` times ``OFF`` (a KeyError if there is none)."""
    found = []

    def scale(path, x):
        if jax.tree_util.keystr(path) != leaf:
            return x
        found.append(leaf)
        return x * OFF

    out = jax.tree_util.tree_map_with_path(scale, tree)
    if found != [leaf]:
        raise KeyError(leaf)
    return out


def _planted(f, leaf: str) -> Callable:
    return lambda tree: _scaled(_oracle(f, tree), leaf)


def _zeros_at_held(grad, tree):
    """A user's gradient with zeros (not ``None``) at the held array leaves."""
    return jax.tree_util.tree_map(lambda g, x: jnp.zeros_like(x) if g is None else g, grad, tree,
                                  is_leaf=lambda g: g is None)  # fmt: skip


def _failed(report) -> set[str]:
    return {r.leaf for r in report.failures}


def _check(f, tree, held: list[str], leaf: str, right_grad=None):
    """check_grad of ``f`` at ``tree`` passes with a row per inexact leaf and ``held`` named;
    a grad= right at ``right_grad`` passes; jax.grad's gradient with ``leaf`` scaled fails
    on ``leaf`` alone."""
    report = fnn.check_grad(f, tree)
    assert report.ok, str(report)
    assert {r.leaf for r in report.rows} == _paths(tree)
    note = "held fixed (not inexact arrays): " + ", ".join(held) if held else "held fixed"
    assert (note in report.description) == bool(held), report.description
    if right_grad is not None:
        assert fnn.check_grad(f, tree, grad=right_grad).ok
    wrong = fnn.check_grad(f, tree, grad=_planted(f, leaf))
    assert _failed(wrong) == {leaf}, str(wrong)
    return report


# -- Equinox: an MLP as eqx.nn.MLP builds it, a CNN of eqx.nn.Conv2d and a linear head --------


class CNN(eqx.Module):
    conv: eqx.nn.Conv2d
    head: eqx.nn.Linear
    activation: Callable  # a leaf of the module, held

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 2, kernel_size=3, key=k1)  # 1x6x6 -> 2x4x4
        self.head = eqx.nn.Linear(2 * 4 * 4, 2, key=k2)
        self.activation = jnp.tanh

    def __call__(self, image):
        return self.head(jnp.ravel(self.activation(self.conv(image))))


# the MLP's activations are leaves too: gelu and the identity at the end (relu: below)
NAMES = ["cnn", "mlp"]
HELD = {"mlp": [".activation", ".final_activation"], "cnn": [".activation"]}
PLANT = {"mlp": ".layers[1].weight", "cnn": ".conv.weight"}  # the weight the bug is in


@functools.cache
def equinox_model(name):
    if name == "mlp":
        return eqx.nn.MLP(3, 2, 8, 2, activation=jax.nn.gelu, key=jax.random.key(3))
    if name == "relu mlp":  # eqx.nn.MLP's default activation, relu (a custom_jvp)
        return eqx.nn.MLP(3, 2, 8, 2, key=jax.random.key(3))
    return CNN(jax.random.key(4))


@functools.cache
def static(name):  # the non-array part of the model, for the partitioned params' loss
    return eqx.partition(equinox_model(name), eqx.is_inexact_array)[1]


def mlp_loss(model):
    return jnp.sum(jnp.sin(jax.vmap(model)(X.astype(_dtype(model)))))


def cnn_loss(model):
    return jnp.sum(jnp.sin(jax.vmap(model)(IMAGES.astype(_dtype(model)))))


def mlp_params_loss(params):  # the partitioned params: None where the functions were
    return mlp_loss(eqx.combine(params, static("mlp")))


def cnn_params_loss(params):
    return cnn_loss(eqx.combine(params, static("cnn")))


LOSS = {"mlp": mlp_loss, "cnn": cnn_loss}
PARAMS_LOSS = {"mlp": mlp_params_loss, "cnn": cnn_params_loss}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_an_equinox_module_as_it_is_and_partitioned(name, dtype):
    model = _cast(equinox_model(name), dtype)
    assert any(not eqx.is_array(x) for x in jax.tree_util.tree_leaves(model))  # functions
    report = _check(LOSS[name], model, HELD[name], PLANT[name])
    assert report.dtype == dtype
    params, _ = eqx.partition(model, eqx.is_inexact_array)
    _check(PARAMS_LOSS[name], params, [], PLANT[name])


def test_equinox_gradients_with_none_at_the_functions_pass():
    model = equinox_model("mlp")
    assert fnn.check_grad(mlp_loss, model, grad=eqx.filter_grad(mlp_loss)).ok
    wrong = lambda m: _scaled(eqx.filter_grad(mlp_loss)(m), ".layers[0].bias")  # noqa: E731
    assert _failed(fnn.check_grad(mlp_loss, model, grad=wrong)) == {".layers[0].bias"}


def relu_pattern(model):
    """Which side of its kink each hidden pre-activation of the relu MLP is on, input by input."""
    h, sides = X.astype(_dtype(model)), []
    for layer in model.layers[:-1]:
        z = jax.vmap(layer)(h)
        sides.append(jnp.ravel(z > 0))
        h = model.activation(z)
    return jnp.concatenate(sides)


def test_a_relu_mlp_in_float32_with_a_unit_near_its_kink():
    model = _cast(equinox_model("relu mlp"), "float32")
    # unit 6 of the second hidden layer is 5e-5 from its kink for input 1 (float32 steps cross)
    z = jax.vmap(model.layers[1])(jax.nn.relu(jax.vmap(model.layers[0])(X.astype("float32"))))
    assert float(jnp.min(jnp.abs(z[:, 6]))) < 1e-4
    report = fnn.check_grad(mlp_loss, model, pattern=relu_pattern)  # the kinks named: passes
    assert report.ok, str(report)
    assert "kink" in {r.status.split()[0] for r in report.rows}
    # Without pattern= the check must not fail the right gradient either. Moving bias[4] of
    # the first layer by 2e-4 flips that unit (slope -0.0195 below, 0.10 above): every
    # float32 rung (0.33 down to 0.01) crosses it and reads the average slope, converged;
    # bias[7] crosses another between its two smallest rungs. The second differences (order
    # 1 across a kink) and the smaller rungs' disagreement with the larger ones tell: those
    # entries are left out and counted, the Taylor rows along dense directions are kinks.
    report = fnn.check_grad(mlp_loss, model)
    assert report.ok, str(report)
    grad = {r.leaf: r for r in report.rows if r.method == "grad"}
    assert grad[".layers[0].bias"].status == "kink" and grad[".layers[0].bias"].kinks >= 2
    assert sum(r.kinks for r in grad.values()) <= 8  # of 122 entries: the rest are judged
    # and a planted bug beside the kinks still fails, at its leaf alone
    wrong = _planted(mlp_loss, ".layers[1].weight")
    failed = {r.leaf for r in fnn.check_grad(mlp_loss, model, grad=wrong).failures}
    assert failed == {".layers[1].weight"}


# -- flax: linen variables (with an int counter beside the params), an nnx module and its State


class Linen(linen.Module):
    @linen.compact
    def __call__(self, x):
        calls = self.variable("counter", "calls", lambda: jnp.array(0))  # an int leaf, held
        del calls
        h = jnp.tanh(linen.Dense(6, param_dtype=jnp.float64, name="hidden")(x))
        return linen.Dense(2, param_dtype=jnp.float64, name="out")(h)


LINEN = Linen()


@functools.cache
def linen_variables():
    return LINEN.init(jax.random.key(5), X)


def linen_loss(variables):
    return jnp.sum(jnp.sin(LINEN.apply(variables, X.astype(_dtype(variables)))))


@pytest.mark.parametrize("dtype", DTYPES)
def test_flax_linen_variables(dtype):
    variables = _cast(linen_variables(), dtype)
    report = _check(linen_loss, variables, ["['counter']['calls']"], "['params']['out']['kernel']",
                    right_grad=lambda v: _zeros_at_held(_oracle(linen_loss, v), v))  # fmt: skip
    assert {r.leaf for r in report.rows} == {
        f"['params']['{layer}']['{name}']" for layer in ("hidden", "out")
        for name in ("kernel", "bias")
    }  # fmt: skip


class Nnx(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(3, 6, param_dtype=jnp.float64, rngs=rngs)
        self.out = nnx.Linear(6, 2, param_dtype=jnp.float64, rngs=rngs)
        self.calls = nnx.BatchStat(jnp.array(0))  # an int leaf, held

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


@functools.cache
def nnx_split():
    return nnx.split(Nnx(nnx.Rngs(6)))


def nnx_loss(model):
    return jnp.sum(jnp.sin(model(X.astype(_dtype(model)))))


def nnx_state_loss(state):
    return nnx_loss(nnx.merge(nnx_split()[0], state))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_flax_nnx_module_and_its_state(dtype):
    graphdef, state = nnx_split()
    state = _cast(state, dtype)
    model = nnx.merge(graphdef, state)
    report = _check(nnx_loss, model, [".calls.value"], ".out.kernel.value")
    assert {r.leaf for r in report.rows} == {
        f".{layer}.{name}.value" for layer in ("hidden", "out") for name in ("kernel", "bias")
    }  # fmt: skip
    _check(nnx_state_loss, state, ["['calls'].value"], "['out']['kernel'].value",
           right_grad=lambda s: _zeros_at_held(_oracle(nnx_state_loss, s), s))  # fmt: skip


# -- check_vjp and check_jvp: an Equinox module among the primals, g(model, x) = model(x) -------


def apply(primals):
    model, x = primals
    return model(x)


VJP_PLANT = "[0].layers[1].weight"


@eqx.filter_jit  # the user's rule is called once per cotangent: compiled once
def wrong_vjp(primals, ct):  # jax.vjp's, its cotangent for one weight 5% too large
    params, static = eqx.partition(primals, eqx.is_inexact_array)
    _, pullback = jax.vjp(lambda p: apply(eqx.combine(p, static)), params)
    return _scaled(pullback(ct)[0], VJP_PLANT)


@eqx.filter_jit
def wrong_jvp(primals, tangents):  # jax.jvp's, with one weight's tangent 5% too large
    params, static = eqx.partition(primals, eqx.is_inexact_array)
    g = lambda p: apply(eqx.combine(p, static))  # noqa: E731
    return jax.jvp(g, (params,), (_scaled(tangents, VJP_PLANT),))[1]


CHECKS = {"vjp": (fnn.check_vjp, wrong_vjp), "jvp": (fnn.check_jvp, wrong_jvp)}


@pytest.mark.heavy
@pytest.mark.parametrize("dtype", ["float32"])  # the harder dtype; float64 modules: above
@pytest.mark.parametrize("mode", sorted(CHECKS))
def test_check_vjp_and_check_jvp_with_an_equinox_module_among_the_primals(mode, dtype):
    check, wrong = CHECKS[mode]
    primals = (_cast(equinox_model("mlp"), dtype), jnp.linspace(-1.0, 1.0, 3, dtype=dtype))
    leaves = _paths(primals)
    assert {"[1]", "[0].layers[0].weight", VJP_PLANT} <= leaves
    report = check(apply, primals)
    assert report.ok, str(report)
    assert {r.leaf for r in report.rows if r.method == mode} == leaves
    assert "held fixed (not inexact arrays): [0].activation, [0].final_activation" in (
        report.description
    )
    planted = check(apply, primals, wrong)
    assert _failed(planted) == {VJP_PLANT}, str(planted)
