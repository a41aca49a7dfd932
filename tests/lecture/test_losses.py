"""Losses: dJ/dy_hat against jax.grad, the fused BCE on logits, and bad targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import DERIVATIVE_VS_GRAD

from functional_nn import bce, cross_entropy, get_loss, mse, sigmoid, softmax


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
    np.testing.assert_allclose(bce.logits_grad(z, y), sigmoid(z) - y, rtol=1e-13, atol=1e-16)


def _exact_bce_on_logits(z, y):
    """mpmath at 50 digits: softplus(z) - y z and sigma(z) - y, the float inputs taken exactly."""
    import mpmath

    with mpmath.workdps(50):
        z, y = mpmath.mpf(float(z)), mpmath.mpf(float(y))
        return float(mpmath.log1p(mpmath.exp(z)) - y * z), float(1 / (1 + mpmath.exp(-z)) - y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_on_logits_keeps_the_small_loss_of_a_confident_right_logit(dtype):
    """softplus(z) - y z rounded the loss of z = 20, y = 1 (about 2e-9) to 0 in float32, and
    sigma(z) - y its gradient: both are now within a few ulp of the exact values."""
    for z, y in [(20.0, 1.0), (-20.0, 0.0), (15.0, 1.0), (60.0, 1.0), (-3.0, 1.0), (2.0, 0.3)]:
        value, grad = _exact_bce_on_logits(z, y)
        zs, ys = jnp.full((1, 1), z, dtype), jnp.full((1, 1), y, dtype)
        got_value = float(bce.logits_value(zs, ys)[0])
        autodiff = jax.grad(lambda a, ys=ys: bce.logits_value(a, ys).sum())(zs)
        got_grads = [float(bce.logits_grad(zs, ys)[0, 0]), float(autodiff[0, 0])]
        rtol = 8 * float(jnp.finfo(dtype).eps)
        np.testing.assert_allclose(got_value, value, rtol=rtol, err_msg=f"value at z={z}, y={y}")
        np.testing.assert_allclose(got_grads, [grad, grad], rtol=rtol, err_msg=f"z={z}, y={y}")


def test_bce_and_cross_entropy_have_finite_gradients_at_a_certain_right_prediction():
    """0 log 0 = 0 with the exact derivative: at y_hat = y = 1, dJ/dy_hat = -1/y_hat = -1 (and
    1/(1 - y_hat) = 1 at y_hat = y = 0); xlogy's rule gave 0/0 = nan there."""
    one, zero = jnp.ones((1, 1)), jnp.zeros((1, 1))
    for y_hat, y, exact in [(one, one, -1.0), (zero, zero, 1.0)]:
        autodiff = jax.grad(lambda a, y=y: bce.value(a, y).sum())(y_hat)
        assert float(autodiff[0, 0]) == float(bce.grad(y_hat, y)[0, 0]) == exact
        assert float(bce.value(y_hat, y)[0]) == 0.0
    y_hat, y = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0]])
    autodiff = jax.grad(lambda a: cross_entropy.value(a, y).sum())(y_hat)
    assert autodiff.tolist() == cross_entropy.grad(y_hat, y).tolist() == [[-1.0, 0.0]]


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
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'.*'bce', 'cross_entropy', 'mse'"):
        get_loss("hinge")


# -- softmax and cross-entropy (multi-class) ----------------------------------------------------


def test_softmax_jacobian_and_vjp_match_autodiff(key):
    z = 3 * jax.random.normal(key, (4, 5))
    jac = jax.vmap(jax.jacfwd(softmax.fn))(z)
    np.testing.assert_allclose(softmax.jacobian(z), jac, rtol=1e-13, atol=1e-16)
    g = jax.random.normal(jax.random.key(1), (4, 5))
    np.testing.assert_allclose(softmax.vjp(z, g), jnp.einsum("ni,nij->nj", g, jac), atol=1e-15)
    with pytest.raises(ValueError, match="softmax is not elementwise"):
        softmax.derivative(z)


def test_cross_entropy_on_logits_equals_composed_and_its_grad_is_y_hat_minus_y(key):
    z = 4 * jax.random.normal(key, (6, 4))
    y = jax.nn.one_hot(jnp.array([0, 1, 2, 3, 1, 0]), 4, dtype=z.dtype)
    np.testing.assert_allclose(
        cross_entropy.logits_value(z, y), cross_entropy.value(softmax(z), y), rtol=1e-13
    )
    expected = jax.grad(lambda a: jnp.sum(cross_entropy.logits_value(a, y)))(z)
    np.testing.assert_allclose(cross_entropy.logits_grad(z, y), expected, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(cross_entropy.logits_grad(z, y), softmax(z) - y, atol=1e-16)
    y_hat = softmax(z)
    expected = jax.grad(lambda a: jnp.sum(cross_entropy.value(a, y)))(y_hat)
    np.testing.assert_allclose(cross_entropy.grad(y_hat, y), expected, rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_is_exact_at_extreme_logits(dtype):
    z = jnp.array([[1e4, 0.0, -1e4]], dtype)
    y = jnp.array([[0.0, 0.0, 1.0]], dtype)  # wrong with certainty
    assert float(cross_entropy.logits_value(z, y)[0]) == 2e4
    assert cross_entropy.logits_grad(z, y).tolist() == [[1.0, 0.0, -1.0]]


def test_cross_entropy_needs_rows_that_sum_to_one():
    from functional_nn.lecture._losses import check_targets

    with pytest.raises(ValueError, match="each row of y to sum to 1.*1 rows do not"):
        check_targets(cross_entropy, jnp.array([[1.0, 0.0], [1.0, 1.0]]), "test")
    check_targets(cross_entropy, jnp.array([[0.3, 0.7], [1.0, 0.0]]), "test")  # soft labels
