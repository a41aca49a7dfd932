"""Activations: each hand-written derivative against jax.grad, the complex step, and its limits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import COMPLEX_STEP_1D, DERIVATIVE_VS_GRAD

from functional_nn import ACTIVATIONS, get_activation, relu, sigmoid

ALL = sorted(ACTIVATIONS)


def _points(dtype, key):
    z = 4 * jax.random.normal(key, (257,), dtype)
    return z[jnp.abs(z) > 1e-3]  # away from relu's kink: jax.grad and act' agree there too


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ALL)
def test_derivative_matches_autodiff(name, dtype, key):
    act = get_activation(name)
    z = _points(dtype, key)
    expected = jax.vmap(jax.grad(act.fn))(z.astype("float64"))
    got = act.derivative(z)
    assert got.dtype == z.dtype
    # normwise: jax.grad's own rule for tanh, 1 - tanh^2, cancels where tanh' is tiny
    tol = DERIVATIVE_VS_GRAD[dtype]
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * float(jnp.max(expected)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_and_tanh_derivatives_keep_relative_precision_in_the_tails(dtype):
    z = np.array([-30.0, -12.0, -5.0, 0.5, 5.0, 12.0, 30.0])
    e = np.exp(-np.abs(z))
    tol = DERIVATIVE_VS_GRAD[dtype]
    got = get_activation("sigmoid").derivative(jnp.asarray(z, dtype))
    np.testing.assert_allclose(got, e / (1 + e) ** 2, rtol=tol)
    got = get_activation("tanh").derivative(jnp.asarray(z, dtype))
    np.testing.assert_allclose(got, 1 / np.cosh(z) ** 2, rtol=tol)


@pytest.mark.parametrize("name", ALL)
def test_derivative_matches_complex_step(name, key):
    act = get_activation(name)
    z = _points("float64", key)
    h = 1e-30
    cs = jnp.imag(act.fn(z + 1j * h)) / h
    np.testing.assert_allclose(cs, act.derivative(z), rtol=COMPLEX_STEP_1D, atol=1e-300)
    assert jnp.iscomplexobj(act.derivative(z + 1j * h))


@pytest.mark.parametrize("name", ALL)
def test_jacobian_is_diagonal_of_derivative(name, key):
    act = get_activation(name)
    z = jax.random.normal(key, (3, 5))
    J = act.jacobian(z)
    assert J.shape == (3, 5, 5)
    np.testing.assert_array_equal(jnp.diagonal(J, axis1=1, axis2=2), act.derivative(z))
    off_diagonal = J * (1 - jnp.eye(5))[None]
    assert not bool(jnp.any(off_diagonal))


def test_sigmoid_formula_and_derivative_identity(key):
    z = 6 * jax.random.normal(key, (100,))
    np.testing.assert_allclose(sigmoid(z), 1 / (1 + np.exp(-np.asarray(z))), rtol=1e-15)
    s = sigmoid(z)
    np.testing.assert_allclose(sigmoid.derivative(z), s * (1 - s), rtol=1e-9)  # 1 - s cancels
    np.testing.assert_allclose(sigmoid.derivative(z), s * sigmoid(-z), rtol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_exact_and_finite_at_extreme_logits(dtype):
    z = jnp.array([-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4], dtype)
    s = sigmoid(z)
    assert s.dtype == z.dtype
    assert s.tolist()[3] == 0.5
    assert s[0] == 0 and s[-1] == 1 and s[-2] == 1
    assert bool(jnp.all(jnp.isfinite(s)))
    g = jax.vmap(jax.grad(sigmoid.fn))(z)  # autodiff through both branches stays finite
    assert bool(jnp.all(jnp.isfinite(g)))
    assert bool(jnp.all(jnp.isfinite(sigmoid.derivative(z))))


def test_relu_derivative_at_zero_is_zero_like_jax_nn_relu():
    assert float(relu.derivative(jnp.array(0.0))) == 0.0
    assert float(jax.grad(jax.nn.relu)(0.0)) == 0.0
    assert float(jax.grad(relu.fn)(0.0)) == 0.0
    assert relu.derivative(jnp.array([-1.0, 1.0])).tolist() == [0.0, 1.0]


def test_relu_branches_on_the_real_part():
    z = jnp.array([-2.0 + 1e-20j, 3.0 + 1e-20j])
    out = relu(z)
    assert out[0] == 0 and out[1] == z[1]


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'.*'relu'"):
        get_activation("swish")
