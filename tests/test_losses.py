"""Losses: dJ/dy_hat against jax.grad, the fused BCE on logits, and bad targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import DERIVATIVE_VS_GRAD

from functional_nn import bce, get_loss, mse, sigmoid


def _data(key, shape=(6, 3)):
    k1, k2 = jax.random.split(key)
    y_hat = jax.random.uniform(k1, shape, minval=0.05, maxval=0.95)
    y = (jax.random.uniform(k2, shape) > 0.5).astype(y_hat.dtype)
    return y_hat, y


@pytest.mark.parametrize("loss", [bce, mse], ids=lambda l: l.name)
def test_grad_matches_autodiff(loss, key):
    y_hat, y = _data(key)
    expected = jax.grad(lambda a: jnp.sum(loss.value(a, y)))(y_hat)
    np.testing.assert_allclose(loss.grad(y_hat, y), expected, rtol=DERIVATIVE_VS_GRAD["float64"])


def test_mse_is_the_lectures_squared_norm_and_its_gradient_is_two_residuals(key):
    y_hat, y = _data(key)
    r = np.asarray(y_hat - y)
    np.testing.assert_allclose(mse.value(y_hat, y), (r**2).sum(axis=1), rtol=1e-15)
    np.testing.assert_allclose(mse.grad(y_hat, y), 2 * r, rtol=1e-15)


def test_bce_is_the_lectures_cross_entropy(key):
    y_hat, y = _data(key)
    a, t = np.asarray(y_hat), np.asarray(y)
    expected = -(t * np.log(a) + (1 - t) * np.log(1 - a)).sum(axis=1)
    np.testing.assert_allclose(bce.value(y_hat, y), expected, rtol=1e-14)
    np.testing.assert_allclose(bce.grad(y_hat, y), (a - t) / (a * (1 - a)), rtol=1e-14)


def test_bce_on_logits_equals_bce_of_sigmoid(key):
    z = 5 * jax.random.normal(key, (6, 3))
    y = (z + jax.random.normal(jax.random.key(3), z.shape) > 0).astype(z.dtype)
    np.testing.assert_allclose(bce.logits_value(z, y), bce.value(sigmoid(z), y), rtol=1e-12)


def test_bce_logits_grad_is_sigmoid_minus_y_and_matches_autodiff(key):
    z = 5 * jax.random.normal(key, (6, 3))
    y = jax.random.uniform(jax.random.key(1), z.shape)  # soft labels are allowed
    expected = jax.grad(lambda a: jnp.sum(bce.logits_value(a, y)))(z)
    np.testing.assert_allclose(bce.logits_grad(z, y), expected, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(bce.logits_grad(z, y), sigmoid(z) - y, rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_on_logits_is_exact_at_extreme_logits(dtype):
    z = jnp.array([1e4, -1e4], dtype)
    wrong = jnp.array([0.0, 1.0], dtype)
    right = jnp.array([1.0, 0.0], dtype)
    assert float(jnp.sum(bce.logits_value(z, wrong))) == 2e4  # wrong with certainty: exactly
    assert float(jnp.sum(bce.logits_value(z, right))) == 0.0
    assert bce.logits_grad(z, wrong).tolist() == [1.0, -1.0]


def test_shapes_must_match_exactly():
    with pytest.raises(ValueError, match=r"y has shape \(4,\) but y_hat has shape \(4, 1\)"):
        mse.value(jnp.zeros((4, 1)), jnp.zeros(4))
    with pytest.raises(ValueError, match="nothing is broadcast"):
        bce.grad(jnp.full((4, 2), 0.5), jnp.zeros((1, 2)))


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'.*'bce', 'mse'"):
        get_loss("hinge")
