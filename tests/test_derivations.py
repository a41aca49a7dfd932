"""SymPy closed forms against the hand-written library, and the proofs themselves."""

import inspect
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from tolerances import SYMPY_VS_HAND

import functional_nn as fnn
from derivations import MAX_PARAMS, activations, losses, sympy_gradient
from derivations.chain_rule import chain_rule
from derivations.collapse import collapse
from derivations.logistic import prove_logistic_regression
from derivations.method import closed_form
from derivations.networks import delta_rule_gradient, prove_delta_rule, symbolic_network
from derivations.record import render
from derivations.symbols import JAX_MODULES

ROOT = Path(__file__).resolve().parent.parent


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# -- proofs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "identity", activations.IDENTITIES + losses.IDENTITIES, ids=lambda i: i.name
)
def test_identity_is_proved_by_simplification(identity):
    assert activations.prove(identity)


def test_a_wrong_closed_form_is_caught():
    z = activations.z
    sigma = 1 / (1 + sp.exp(-z))
    wrong = activations.Identity("sigmoid' = sigmoid^2", sp.diff(sigma, z), sigma**2, "", "")
    assert not activations.prove(wrong)
    wrong_relu = activations.Identity(
        "relu'(0) = 1", sp.diff(sp.Piecewise((z, z > 0), (0, True)), z),
        sp.Piecewise((1, z >= 0), (0, True)), "", "",
    )  # fmt: skip
    assert not activations.prove(wrong_relu)


@pytest.mark.parametrize("D", [1, 2, 3])
def test_logistic_regression_gradient_is_proved(D):
    assert prove_logistic_regression(D, N=3)


def test_vector_chain_rule_holds_with_the_slide_shapes():
    c = chain_rule(L=2, M=3, N=2)
    assert c.holds
    assert c.lhs.shape == (2, 2) and c.dz_dy.shape == (2, 3) and c.dy_dx.shape == (3, 2)


def test_linear_collapse_holds_symbolically():
    k = collapse((3, 4, 3, 2), bias=True)
    assert k.holds and k.W_eq.shape == (2, 3) and k.b_eq.shape == (2, 1)


def test_delta_rule_equals_the_direct_derivative_for_the_lecture_network():
    net = symbolic_network((4, 3, 2))
    assert len(net.params) == 18
    assert prove_delta_rule(net)
    # and a delta rule that forgets sigma'(z(1)) is not the derivative
    broken = delta_rule_gradient(net._replace(hidden="identity"))
    assert any(sp.simplify(a - b) != 0 for a, b in zip(net.grad, broken, strict=True))


def test_symbolic_factors_have_the_design_shapes():
    shapes = {k: v.shape for k, v in symbolic_network((4, 3, 2), loss="mse").factors.items()}
    assert shapes == {"dJ/dy_hat": (1, 2), "dh(2)/dw(2)": (2, 6), "dh(2)/dh(1)": (2, 3),
                      "dh(1)/dw(1)": (3, 12)}  # fmt: skip


# -- closed forms against the hand-written library ---------------------------------------------


@pytest.mark.parametrize("name", sorted(activations.DERIVATIVES))
def test_activation_derivative_matches_the_library(name, key):
    f = sp.lambdify(activations.z, activations.DERIVATIVES[name], modules="jax")
    z = 4 * jax.random.normal(key, (200,))
    expected = jnp.broadcast_to(f(z), z.shape)
    assert _rel(fnn.get_activation(name).derivative(z), expected) <= SYMPY_VS_HAND


def test_loss_derivatives_match_the_library(key):
    k1, k2 = jax.random.split(key)
    y_hat = jax.random.uniform(k1, (50,), minval=0.02, maxval=0.98)
    y = jax.random.uniform(k2, (50,))
    z = 6 * jax.random.normal(k1, (50,))
    d = losses.DERIVATIVES
    bce = sp.lambdify((losses.y_hat, losses.y), d["bce"], modules="jax")
    logits = sp.lambdify((losses.z, losses.y), d["bce_logits"], modules="jax")
    mse = sp.lambdify((losses.y_hat, losses.y), d["mse"], modules="jax")
    assert _rel(fnn.bce.grad(y_hat, y), bce(y_hat, y)) <= SYMPY_VS_HAND
    assert _rel(fnn.bce.logits_grad(z, y), logits(z, y)) <= SYMPY_VS_HAND
    assert _rel(fnn.mse.grad(y_hat, y), mse(y_hat, y)) <= SYMPY_VS_HAND


def test_symbolic_factors_match_jacobian_factors_numerically(key):
    net = fnn.Network((4, 3, 2), bias=False)
    sym = symbolic_network(net.sizes)
    params = net.init(key)
    x = jax.random.normal(jax.random.key(1), (4,))
    y = jnp.array([1.0, 0.0])
    theta = jnp.concatenate([p.W.ravel() for p in params])
    args = [list(sym.x), list(sym.y), sym.params]
    values = {k: sp.lambdify(args, m, modules=JAX_MODULES, cse=True)(list(x), list(y), list(theta))
              for k, m in sym.factors.items()}  # fmt: skip
    f = fnn.jacobian_factors(net, "bce", params, x, y)
    pairs = [
        ("dJ/dz(2)", f.seed),
        ("dz(2)/dw(2)", f.layers[1].dh_dw),
        ("dz(2)/dh(1)", f.layers[1].dh_dh_prev),
        ("dh(1)/dw(1)", f.layers[0].dh_dw),
    ]
    for name, library in pairs:
        assert _rel(library, values[name]) <= SYMPY_VS_HAND, name


# the lecture's network with every hidden activation, and logistic regression (no hidden layer)
CASES = [((4, 3, 2), h, b) for h in ("sigmoid", "relu", "tanh", "identity") for b in (False, True)]
CASES += [((5, 1), "sigmoid", b) for b in (False, True)]


@pytest.mark.parametrize("sizes, hidden, bias", CASES)
def test_sympy_method_matches_every_hand_written_method(sizes, bias, hidden, key):
    net = fnn.Network(sizes, hidden=hidden, bias=bias)
    kp, kb, kx, ky = jax.random.split(key, 4)
    params = net.init(kp)
    if bias:
        params = tuple(fnn.Layer(W, 0.3 * jax.random.normal(kb, b.shape)) for W, b in params)
    x = jax.random.normal(kx, (7, net.D))
    y = (jax.random.uniform(ky, (7, net.O)) > 0.5).astype(x.dtype)
    J, grads = jax.jit(lambda p, x, y: sympy_gradient(net, "bce", p, x, y))(params, x, y)
    for method in (fnn.backprop, fnn.jacobian_chain, fnn.autodiff):
        J_m, g_m = method(net, "bce", params, x, y)
        assert abs(float(J) - float(J_m)) <= SYMPY_VS_HAND * abs(float(J_m))
        for c in fnn.compare_gradients(grads, g_m):
            assert c.normwise <= SYMPY_VS_HAND, (method.__name__, c)


def test_sympy_method_handles_mse_mean_and_a_single_sample(key):
    net = fnn.Network((3, 4, 2), hidden="tanh", output="identity")
    params = net.init(key)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    y = jax.random.normal(jax.random.key(2), (5, 2))
    for xs, ys in ((x, y), (x[0], y[0])):
        _, g = sympy_gradient(net, "mse", params, xs, ys, reduction="mean")
        _, r = fnn.autodiff(net, "mse", params, xs, ys, reduction="mean")
        assert max(c.normwise for c in fnn.compare_gradients(g, r)) <= SYMPY_VS_HAND


def test_relu_goes_through_piecewise_not_max():
    f = closed_form((3, 2, 1), "relu", "sigmoid", True, "bce")
    source = inspect.getsource(f)
    assert "select" in source and "Max" not in source and "amax" not in source


def test_sympy_method_refuses_large_networks(key):
    net = fnn.Network((20, 10, 1))
    assert net.num_params() > MAX_PARAMS
    x, y = jnp.zeros((2, 20)), jnp.zeros((2, 1))
    with pytest.raises(ValueError, match=r"P=221 parameters; closed forms are derived for at most"):
        sympy_gradient(net, "bce", net.init(key), x, y)


def test_derivations_md_is_what_derive_writes():
    assert (ROOT / "derivations" / "DERIVATIONS.md").read_text() == render() + "\n"
