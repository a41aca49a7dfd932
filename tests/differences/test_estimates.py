"""From evaluations to estimates, each against a closed form: the step scale, central
differences and their rounding floor, Richardson's two-rung estimate and Ridders' ladder with
their error bars, the complex step and the rule that validates it, with NumPy and with
``jax.numpy`` alike."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from functional_nn.differences._estimates import (
    ROUNDING,
    central,
    complex_agrees,
    complex_step,
    crossed_kink,
    leaf_scale,
    richardson_ladder,
    rounding_floor,
    step_scale,
)

DTYPES = [np.float32, np.float64]


def _u(dtype):
    return float(np.finfo(dtype).eps)


def _ladder(f, x, hs, dtype):
    """``f`` at ``x +- h_j`` evaluated in ``dtype``, returned in float64 as ``(J, 1)``."""
    xd = dtype(x)
    plus = f(xd + np.asarray(hs).astype(dtype)).astype(dtype).astype(np.float64)
    minus = f(xd - np.asarray(hs).astype(dtype)).astype(dtype).astype(np.float64)
    return plus[:, None], minus[:, None], float(xd)


def _ladder_steps(dtype, x, J=8):
    """The checkers' ladder: 0.5 down to 10 sqrt(u), geometric, times max(1, |x|)."""
    return np.logspace(np.log10(0.5), np.log10(10 * np.sqrt(_u(dtype))), J) * max(1, abs(x))


# -- step_scale, central, rounding_floor ---------------------------------------------------------


def test_step_scale_is_relative_to_the_parameters_and_absolute_near_zero():
    assert step_scale(0.0) == 1 and step_scale(0.3) == 1 and step_scale(1.0) == 1
    assert step_scale(2.5) == 2.5 and step_scale(1e6) == 1e6
    np.testing.assert_array_equal(step_scale(np.array([0.0, 0.5, 3.0, 40.0])), [1, 1, 3, 40])
    np.testing.assert_array_equal(step_scale(jnp.array([0.5, 3.0]), jnp), [1.0, 3.0])


def test_a_whole_leaf_moves_relative_to_its_own_size_and_a_leaf_of_zeros_absolutely():
    np.testing.assert_array_equal(leaf_scale(np.array([0.02, 3.0, 0.0])), [0.02, 3.0, 1.0])
    assert float(leaf_scale(jnp.float32(0.5), jnp)) == 0.5


def test_central_is_the_symmetric_quotient_broadcast_against_the_values():
    plus, minus, h = np.array([[3.0, 5.0]]), np.array([[1.0, -1.0]]), np.array([[0.5]])
    np.testing.assert_array_equal(central(plus, minus, h), [[2.0, 6.0]])  # (+ - -) / 2h
    x, h = 0.7, 1e-3  # sin: (sin(x+h) - sin(x-h)) / 2h = cos(x) sin(h) / h
    assert central(np.sin(x + h), np.sin(x - h), h) == pytest.approx(
        np.cos(x) * np.sin(h) / h, rel=1e-12
    )


def test_the_rounding_floor_is_16_u_max_f_over_h():
    assert ROUNDING == 16
    assert rounding_floor(3.0, 1e-4, 2.0**-52) == pytest.approx(16 * 2.0**-52 * 3.0 / 1e-4)
    np.testing.assert_allclose(
        rounding_floor(np.array([1.0, 2.0]), np.array([0.5, 0.25]), 1e-7), [3.2e-6, 1.28e-5]
    )


# -- two rungs: Richardson ------------------------------------------------------------------------


@pytest.mark.parametrize("x", [0.3, -1.2, 2.5])
def test_two_rungs_of_ratio_two_give_four_d_h_minus_d_2h_over_three(x):
    h = 1e-2
    D = lambda h: np.cos(x) * np.sin(h) / h  # noqa: E731 -- central differences of sin, exact
    hs = np.array([2 * h, h])
    plus, minus = np.sin(x + hs)[:, None], np.sin(x - hs)[:, None]
    value, error = richardson_ladder(plus, minus, hs, 2.0**-52)
    assert value.shape == (1,) and error.shape == (1,)
    assert value[0] == pytest.approx((4 * D(h) - D(2 * h)) / 3, rel=1e-12)
    floor = 16 * 2.0**-52 * max(abs(np.sin(x + h)), abs(np.sin(x - h))) / h
    assert error[0] == pytest.approx(abs(D(h) - D(2 * h)) + floor, rel=1e-9)
    # fourth order: |R - f'| ~ 4 h^4 |f^(5)| / 120, against |D(h) - f'| ~ h^2 |f'''| / 6
    assert abs(value[0] - np.cos(x)) < 1e-9 < abs(D(h) - np.cos(x))
    assert abs(value[0] - np.cos(x)) <= error[0]


def test_two_rungs_of_any_ratio_remove_the_h_squared_term_exactly():
    """``D(h) = d + c h^2``: ``R = D(h_1) + (D(h_1) - D(h_0)) / (r^2 - 1)`` is ``d`` exactly;
    the bar is still what the extrapolation removed, ``c (h_0^2 - h_1^2)``, plus the floor."""
    d, c = 1.5, 0.8
    hs = np.array([[0.3, 0.1], [0.2, 0.05]])  # two ladders (a batch axis): ratios 3 and 4
    D = d + c * hs**2
    plus, minus = (D * hs)[..., None], (-D * hs)[..., None]  # (2, 2, 1): plus - minus = 2 h D
    value, error = richardson_ladder(plus, minus, hs, 1e-16)
    np.testing.assert_allclose(value, [[d], [d]], rtol=1e-14)
    floor = 16e-16 * np.abs(D[:, 1] * hs[:, 1]) / hs[:, 1]
    np.testing.assert_allclose(error[:, 0], c * (hs[:, 0] ** 2 - hs[:, 1] ** 2) + floor, rtol=1e-9)


def test_three_rungs_use_the_two_smallest_steps():
    hs = np.array([0.4, 0.2, 0.1])
    plus, minus = np.exp(0.5 + hs)[:, None], np.exp(0.5 - hs)[:, None]
    value, error = richardson_ladder(plus, minus, hs, 2.0**-52)
    last_two = richardson_ladder(plus[1:], minus[1:], hs[1:], 2.0**-52)
    np.testing.assert_array_equal(value, last_two[0])
    np.testing.assert_array_equal(error, last_two[1])


# -- four or more rungs: Ridders ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "f, df", [(np.sin, np.cos), (np.exp, np.exp)], ids=["sin", "exp"]
)  # fmt: skip
@pytest.mark.parametrize("x", [0.75, -1.5, 2.25, 4.125])
def test_a_ladder_picks_an_interior_rung_whose_bar_covers_the_true_error(dtype, f, df, x):
    hs = _ladder_steps(dtype, x)
    plus, minus, xd = _ladder(f, x, hs, dtype)
    value, error = richardson_ladder(plus, minus, hs, _u(dtype))
    assert value.shape == (1,) and error.shape == (1,)
    true = df(xd)
    assert abs(value[0] - true) <= error[0]
    # no blanket: the bar is near the dtype's resolution (a relative 1e-4 in float32, 1e-9 in
    # float64, where the whole derivative is O(1) or more)
    relative = {np.float32: 1e-3, np.float64: 1e-8}[dtype]
    assert error[0] <= relative * max(1.0, abs(true), np.abs(plus).max())
    # the value is one of the interior Richardson estimates R_j (j = 1 .. J-3 of J-1)
    D = (plus[:, 0] - minus[:, 0]) / (2 * hs)
    r2 = (hs[:-1] / hs[1:]) ** 2
    R = D[1:] + (D[1:] - D[:-1]) / (r2 - 1)
    assert np.any(np.isclose(value[0], R[1:-1], rtol=1e-14, atol=0))
    assert not np.isclose(value[0], R[0], rtol=1e-14, atol=0)  # not the first (largest h)


def test_a_bad_rung_is_not_picked():
    """Ridders takes the rung that agrees best with both neighbours: a ladder whose largest
    steps are wrong (``D`` off by 1e-2 there) still gives ``d`` to rounding."""
    d, c = 2.0, 0.5
    hs = 0.5 * 2.0 ** -np.arange(8)
    D = d + c * hs**2
    D[:2] += 1e-2
    value, error = richardson_ladder((D * hs)[:, None], (-D * hs)[:, None], hs, 2.0**-52)
    assert abs(value[0] - d) < 1e-12
    assert error[0] < 1e-9 and abs(value[0] - d) <= error[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_ladder_that_never_shows_the_h_squared_law_is_not_trusted(dtype):
    """``sin(exp(x))`` at x = 4.9 turns ~134 radians per unit of x: every rung of the ladder
    (steps 2.45 down to 0.017 in float32) moves it by radians, the ``D`` jump about, and a rung
    whose neighbours agree by chance would give -0.9 for -94. Its bar is infinite: it can
    refute nothing (the complex step's validation, cause 1 of issue 19)."""
    f = lambda t: np.sin(np.exp(t))  # noqa: E731
    x = 4.9
    hs = _ladder_steps(np.float32, x)
    plus, minus, xd = _ladder(f, x, hs, dtype)
    value, error = richardson_ladder(plus, minus, hs, _u(dtype))
    assert error[0] == np.inf
    assert abs(value[0] - np.cos(np.exp(xd)) * np.exp(xd)) > 10  # it was indeed wrong


def test_a_ladder_that_shows_the_law_only_on_its_small_rungs_is_trusted_there():
    """The same function on a ladder that reaches steps of 1e-5: its small rungs converge."""
    f = lambda t: np.sin(np.exp(t))  # noqa: E731
    x = 4.9
    hs = 0.05 * 2.0 ** -np.arange(14)
    plus, minus, xd = _ladder(f, x, hs, np.float64)
    value, error = richardson_ladder(plus, minus, hs, _u(np.float64))
    true = np.cos(np.exp(xd)) * np.exp(xd)
    assert abs(value[0] - true) <= error[0] < 1e-6 * abs(true)


def test_a_ladder_of_many_outputs_picks_its_rung_output_by_output():
    x = 0.9
    hs = _ladder_steps(np.float64, x)
    plus = np.stack([np.sin(x + hs), np.exp(x + hs), 3 * (x + hs)], axis=-1)  # (J, 3)
    minus = np.stack([np.sin(x - hs), np.exp(x - hs), 3 * (x - hs)], axis=-1)
    value, error = richardson_ladder(plus, minus, hs, 2.0**-52)
    assert value.shape == (3,) and error.shape == (3,)
    true = np.array([np.cos(x), np.exp(x), 3.0])
    assert np.all(np.abs(value - true) <= error)
    for i in range(3):  # the same as each output on its own
        alone = richardson_ladder(plus[:, i : i + 1], minus[:, i : i + 1], hs, 2.0**-52)
        assert alone[0][0] == value[i] and alone[1][0] == error[i]


AMPLITUDE = st.floats(0.1, 2) | st.floats(-2, -0.1)
SMOOTH = st.tuples(AMPLITUDE, st.floats(0.1, 3), st.floats(-3, 3), AMPLITUDE, st.floats(-1.5, 1.5))


@given(SMOOTH, st.floats(-3, 3), st.sampled_from(DTYPES))
def test_the_ladders_bar_covers_its_error(coefficients, x, dtype):
    """Over ``a sin(w x + c) + b exp(k x)`` at points in [-3, 3], in either dtype, at the
    checkers' ladder: the bar is never below the true error, and never a blanket."""
    a, w, c, b, k = coefficients

    def f(t):
        return a * np.sin(w * t + c) + b * np.exp(k * t)

    def df(t):
        return a * w * np.cos(w * t + c) + b * k * np.exp(k * t)

    hs = _ladder_steps(dtype, x)
    plus, minus, xd = _ladder(f, x, hs, dtype)
    value, error = richardson_ladder(plus, minus, hs, _u(dtype))
    assert abs(value[0] - df(xd)) <= error[0]
    scale = max(abs(df(xd)), np.abs(plus).max(), np.abs(minus).max())
    assert error[0] <= {np.float32: 1e-3, np.float64: 1e-8}[dtype] * max(scale, 1e-3)


# -- kinks the confirming ladder crosses ---------------------------------------------------------


def _confirm_steps(dtype, x):
    """The ladder that confirms a failing direction: 8 eps down to eps / 4, eps = u^(1/5)."""
    return _u(dtype) ** 0.2 * 2.0 ** np.arange(3, -3, -1) * max(1, abs(x))


def _kinked(delta, x=0.3):
    """A smooth part and a ReLU unit whose kink lies ``delta`` above ``x`` (slope -0.02
    below, +0.1 above: a jump of 0.12, as in an Equinox MLP's first bias in float32)."""
    return lambda t: 0.2 * np.sin(t) - 0.02 * t + 0.12 * np.maximum(t - (x + delta), 0)


@given(SMOOTH, st.floats(-3, 3), st.sampled_from(DTYPES))
def test_a_smooth_ladder_is_neither_kinked_nor_inconsistent(coefficients, x, dtype):
    """Over the same smooth family at the confirming ladder: the consistency test never
    distrusts what the plain ladder trusts, and the second differences show no kink."""
    a, w, c, b, k = coefficients

    def f(t):
        return a * np.sin(w * t + c) + b * np.exp(k * t)

    hs = _confirm_steps(dtype, x)
    plus, minus, xd = _ladder(f, x, hs, dtype)
    plain = richardson_ladder(plus, minus, hs, _u(dtype))
    checked = richardson_ladder(plus, minus, hs, _u(dtype), consistent=True)
    assert checked[0] == plain[0] and (checked[1] == plain[1] or not np.isfinite(plain[1][0]))
    f0 = np.asarray([f(dtype(x))], np.float64)
    assert not crossed_kink(plus, minus, f0, hs, _u(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_kink_every_step_crosses_reads_the_average_slope_and_the_second_differences_say_so(
    dtype,
):
    """The kink 2e-4 above x: every float32 step crosses it, and the ladder, converged on the
    average slope (0.2 cos x + 0.04), trusts it; s(h) grows like h and gives it away."""
    x, f = 0.3, _kinked(2e-4)
    hs = _confirm_steps(np.float32, x)
    plus, minus, xd = _ladder(f, x, hs, dtype)
    value, _ = richardson_ladder(plus, minus, hs, _u(dtype), consistent=True)
    assert abs(value[0] - (0.2 * np.cos(xd) + 0.04)) < 2e-3  # the average, not -0.02 + ...
    f0 = np.asarray([f(dtype(x))], np.float64)
    assert crossed_kink(plus, minus, f0, hs, _u(dtype))
    far = _kinked(1.0)  # the same unit a whole unit away: smooth at these steps
    plus, minus, _ = _ladder(far, x, hs, dtype)
    assert not crossed_kink(plus, minus, np.asarray([far(dtype(x))], np.float64), hs, _u(dtype))


# f along one bias entry of an Equinox relu MLP in float32 (the research-models test), at the
# confirming ladder: one-sided slopes (D+, D-) per step. Units flip at several distances, so
# the larger steps agree on an average slope; the true one, -0.16637 (jax.grad), only the
# smallest step reads.
RELU_STEPS = np.array([0.3299, 0.1649, 0.08247, 0.04123, 0.02062, 0.01031])
RELU_ONE_SIDED = np.array([
    [-0.38814, -0.00813], [-0.23259, -0.01627], [-0.19797, -0.03254],
    [-0.16914, -0.06507], [-0.16642, -0.13015], [-0.16640, -0.16635],
])  # fmt: skip


def test_a_ladder_whose_larger_steps_read_another_regime_is_contradicted_by_the_smaller():
    f0 = 3.0
    plus = (f0 + RELU_STEPS * RELU_ONE_SIDED[:, 0])[:, None]
    minus = (f0 - RELU_STEPS * RELU_ONE_SIDED[:, 1])[:, None]
    u = _u(np.float32)
    value, error = richardson_ladder(plus, minus, RELU_STEPS, u)
    assert np.isfinite(error[0]) and abs(value[0] + 0.16637) > 4 * error[0]  # trusted, wrong
    assert richardson_ladder(plus, minus, RELU_STEPS, u, consistent=True)[1][0] == np.inf


# -- the complex step ----------------------------------------------------------------------------


@pytest.mark.parametrize("x", [0.3, -1.2, 4.5])
def test_the_complex_step_is_im_f_over_h_with_a_bar_of_16_u_value(x):
    u = 2.0**-52
    h = u * max(1, abs(x))
    imag = np.imag(np.sin(x + 1j * h))  # = cos(x) sinh(h): the derivative to O(h^2)
    value, error = complex_step(np.array([imag]), h, u)
    assert value[0] == pytest.approx(np.cos(x), rel=4 * u)
    assert error[0] == 16 * u * abs(value[0])
    assert abs(value[0] - np.cos(x)) <= error[0]
    z = np.exp(np.array([[0.5, -1.0]]) + 1j * 1e-20)  # many outputs, h broadcast per row
    value, error = complex_step(np.imag(z), np.array([[1e-20]]), u)
    np.testing.assert_allclose(value, np.exp([[0.5, -1.0]]), rtol=1e-15)
    np.testing.assert_array_equal(error, 16 * u * np.abs(value))


# -- complex_agrees ------------------------------------------------------------------------------


def test_complex_agrees_within_the_central_bar_plus_a_relative_bar():
    value = np.array([[1.0, -2.0, 0.5]])
    error = np.array([[1e-3, 1e-6, 1e-6]])
    rel = 1e-6  # scale = 2: the relative part is 2e-6
    inside = value + np.array([[0.9e-3, 2.9e-6, -2.9e-6]])
    assert bool(complex_agrees(inside, value, error, rel))
    assert bool(complex_agrees(value, value, np.zeros_like(value), 0.0))  # exact agreement
    # the bar of one entry excuses nothing in another
    outside = value + np.array([[0.0, 0.0, 1.1e-3]])
    assert not bool(complex_agrees(outside, value, error, rel))
    just_outside = value + np.array([[1e-3 + 2.2e-6, 0.0, 0.0]])
    assert not bool(complex_agrees(just_outside, value, error, rel))
    # the scale is the larger magnitude of either: a complex step 10x off widens it to 20
    assert not bool(complex_agrees(10 * value, value, error, 1e-3))
    assert bool(complex_agrees(value * (1 + 1e-4), value, np.zeros_like(value), 1e-4))


def test_a_nan_disagrees():
    value, error = np.array([[1.0, 2.0]]), np.array([[1.0, 1.0]])
    assert not bool(complex_agrees(np.array([[np.nan, 2.0]]), value, error, 1e-3))
    assert not bool(complex_agrees(value, np.array([[1.0, np.nan]]), error, 1e-3))
    assert not bool(complex_agrees(value, value, np.array([[np.nan, 1.0]]), 1e-3))


def test_the_non_analytic_complex_step_of_conj_is_refused_where_central_resolves_it():
    """``Im(conj(z) z)`` is 0 at ``x + ih``: the complex step reads ``0`` for ``2x``."""
    x, u = 0.8, 2.0**-52
    z = x + 1j * u
    cs, _ = complex_step(np.array([[np.imag(np.conj(z) * z)]]), u, u)
    hs = _ladder_steps(np.float64, x)
    value, error = richardson_ladder(((x + hs) ** 2)[:, None], ((x - hs) ** 2)[:, None], hs, u)
    assert value[0] == pytest.approx(2 * x, rel=1e-12) and cs[0, 0] == 0
    assert not bool(complex_agrees(cs, value[None], error[None], 1e-6))
    assert bool(complex_agrees(np.array([[2 * x]]), value[None], error[None], 1e-6))


# -- the same arithmetic with jax.numpy --------------------------------------------------------


@pytest.mark.parametrize("J", [2, 3, 8])
def test_jax_numpy_gives_the_numpys_results(J):
    x = np.array([0.4, -1.1, 2.0])  # three ladders at once, two outputs each
    hs = np.stack([_ladder_steps(np.float64, xi, J) for xi in x])  # (3, J)
    pts = x[:, None] + hs
    mts = x[:, None] - hs
    plus = np.stack([np.sin(pts), np.exp(pts)], axis=-1)  # (3, J, 2)
    minus = np.stack([np.sin(mts), np.exp(mts)], axis=-1)
    u = 2.0**-52
    want = richardson_ladder(plus, minus, hs, u)
    got = richardson_ladder(jnp.asarray(plus), jnp.asarray(minus), jnp.asarray(hs), u, jnp)
    traced = jax.jit(lambda p, m, h: richardson_ladder(p, m, h, u, jnp))(plus, minus, hs)
    for a, b, c in zip(want, got, traced, strict=True):
        assert a.shape == (3, 2) and isinstance(b, jax.Array)
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)  # to rounding
        np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-14)
    truth = np.stack([np.cos(x), np.exp(x)], axis=-1)
    assert np.all(np.abs(want[0] - truth) <= want[1])


def test_jax_numpy_gives_the_numpys_complex_step_and_verdicts():
    imag, h, u = np.array([[0.3, -2.0]]), np.array([[1e-8]]), 2.0**-52
    for a, b in zip(complex_step(imag, h, u), complex_step(jnp.asarray(imag), h, u, jnp),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(b, a, rtol=1e-15)
    value, error = np.array([[1.0, 2.0]]), np.array([[1e-3, 1e-3]])
    for predicted in ([[1.0005, 2.0]], [[1.01, 2.0]], [[np.nan, 2.0]]):
        predicted = np.array(predicted)
        want = bool(complex_agrees(predicted, value, error, 1e-6))
        got = complex_agrees(jnp.asarray(predicted), jnp.asarray(value), jnp.asarray(error),
                             1e-6, jnp)  # fmt: skip
        assert isinstance(got, jax.Array) and bool(got) is want
