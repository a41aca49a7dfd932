"""Where the complex step applies: the refusal of functions that error on complex input or
answer it with a real output, and the cross-check against central differences that catches
the non-analytic functions that stay complex."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import COMPLEX_STEP_1D

from functional_nn.differences._complex import (
    CROSS_CHECKS,
    check_complex_input,
    complex_checked,
    complex_step_agrees,
)

THETA = jnp.array([0.5, -1.0, 2.0])


def analytic(w):
    return jnp.stack([jnp.sum(jnp.exp(w) * jnp.sin(w)), jnp.sum(w**3) / 3])


def analytic_columns(theta):
    """``columns[j, k] = d analytic_k / d theta_j``, derived by hand."""
    return jnp.stack([jnp.exp(theta) * (jnp.sin(theta) + jnp.cos(theta)), theta**2], axis=1)


def complex_step_columns(g, theta, h=1e-30):
    """What a complex step reads: ``Im g(theta + i h e_j) / h`` for every entry ``j``."""
    eye = jnp.eye(theta.size, dtype=theta.dtype)
    return jax.vmap(lambda e: jnp.imag(g(theta + 1j * h * e)) / h)(eye)


def conj_square(w):
    return jnp.sum(w * jnp.conj(w))[None]  # |w|^2: complex output, not analytic


def real_times(w):
    return jnp.sum(jnp.real(w) * w)[None]  # complex output, not analytic


# -- check_complex_input and complex_checked ----------------------------------------------------


def test_an_analytic_function_is_accepted_and_evaluated_unchanged():
    check_complex_input(analytic, THETA, "cs")  # raises nothing
    check_complex_input(conj_square, THETA, "cs")  # complex out: left to the cross-check
    z = THETA + 1e-3j
    np.testing.assert_array_equal(complex_checked(analytic, "cs")(z), analytic(z))


@pytest.mark.parametrize(
    "g",
    [
        lambda w: jnp.abs(w),
        lambda w: jnp.real(w) ** 2,
        lambda w: (w > 0) * 1.0,
    ],
    ids=["abs", "real", "comparison"],
)
def test_a_real_output_for_complex_input_is_refused_naming_the_caller(g):
    with pytest.raises(ValueError, match=r"^cs: scheme 'complex_step' needs f to stay "
                                         r"complex-analytic, but f returned float64 for complex "
                                         r"parameters.*use scheme='central'"):  # fmt: skip
        check_complex_input(g, THETA, "cs")
    with pytest.raises(ValueError, match="needs f to stay complex-analytic"):
        jax.eval_shape(complex_checked(g, "cs"), jax.ShapeDtypeStruct((3,), jnp.complex128))


def test_an_error_on_complex_input_only_is_refused_and_fs_own_error_passes_through():
    with pytest.raises(ValueError, match=r"^cs: scheme 'complex_step' needs f to accept complex "
                                         r"parameters, but it raised \w+: .*floor"):  # fmt: skip
        check_complex_input(lambda w: jnp.sum(jnp.floor(w)), THETA, "cs")
    W = jnp.ones((4, 2))
    with pytest.raises(TypeError, match="dot_general") as info:  # a shape bug, real or complex
        check_complex_input(lambda w: jnp.tanh(W @ w), THETA, "cs")
    assert "complex_step" not in str(info.value)


def test_complex_checked_passes_real_input_through_unchecked():
    np.testing.assert_array_equal(complex_checked(jnp.abs, "cs")(THETA), jnp.abs(THETA))


# -- complex_step_agrees ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_right_columns_agree_and_so_do_the_complex_steps_of_an_analytic_function(dtype):
    theta = THETA.astype(dtype)
    assert bool(complex_step_agrees(analytic, theta, analytic_columns(theta)))
    if dtype == "float64":
        columns = complex_step_columns(analytic, theta)
        np.testing.assert_allclose(columns, analytic_columns(theta), rtol=COMPLEX_STEP_1D)
        assert bool(complex_step_agrees(analytic, theta, columns))


@pytest.mark.parametrize("g", [conj_square, real_times], ids=["conj", "real_times"])
def test_the_complex_step_of_a_non_analytic_function_that_stays_complex_disagrees(g):
    columns = complex_step_columns(g, THETA)
    true = jax.grad(lambda t: jnp.real(g(t))[0])(THETA)  # the real function's gradient
    assert not np.allclose(columns[:, 0], true)  # the step reads nonsense ...
    assert not bool(complex_step_agrees(g, THETA, columns))  # ... and the check says so
    assert bool(complex_step_agrees(g, THETA, true[:, None]))  # the right columns agree


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_an_error_in_the_largest_column_disagrees(dtype):
    """Off by 1% (float64) or 5% (float32; its bar is 1e-2 relative) in one entry."""
    theta = THETA.astype(dtype)
    right = analytic_columns(theta)
    i = int(jnp.argmax(jnp.max(jnp.abs(right), axis=1)))
    off = {"float64": 1.01, "float32": 1.05}[dtype]
    assert not bool(complex_step_agrees(analytic, theta, right.at[i, 0].multiply(off)))


def test_the_cross_check_makes_cross_checks_evaluations():
    calls = []

    def host_g(t):
        calls.append(np.array(t))
        return np.array([np.sum(t**2)])

    def g(t):
        out = jax.ShapeDtypeStruct((1,), t.dtype)
        return jax.pure_callback(host_g, out, t, vmap_method="sequential")

    assert bool(complex_step_agrees(g, THETA, (2 * THETA)[:, None]))
    assert len(calls) == CROSS_CHECKS == 4
    points = np.stack(calls)
    # theta + h d and theta - h d along two directions d: they average to theta
    np.testing.assert_allclose((points[:2] + points[2:]) / 2, np.stack([THETA, THETA]), rtol=1e-15)


def test_an_empty_output_agrees():
    assert bool(complex_step_agrees(lambda w: w[:0], THETA, jnp.zeros((3, 0))))


def relu_sum(w):
    return jnp.sum(jnp.maximum(w, 0.0))[None]


def positive(w):
    return w > 0


def test_a_kink_excuses_only_the_directions_whose_central_step_crosses_it():
    theta = jnp.array([1e-7, 2.0])  # entry 0 is within a step of the ReLU kink
    right = jnp.array([[1.0], [1.0]])  # the derivative on the side theta is on
    assert not bool(complex_step_agrees(relu_sum, theta, right))  # central straddles the kink
    assert bool(complex_step_agrees(relu_sum, theta, right, pattern=positive))
    # a wrong column along a direction that does not cross the kink still disagrees
    wrong = jnp.array([[1.0], [5.0]])  # the largest column, entry 1, is far from the kink
    assert not bool(complex_step_agrees(relu_sum, theta, wrong, pattern=positive))
