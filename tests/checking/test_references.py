"""The references of the checkers, each against a closed form or autodiff: the flattened
function, the primal of a custom rule, complex input, the evaluations along directions, the
complex step and Richardson central differences with their error bars, and which reference
is picked for which function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from functional_nn.checking import _references as references
from functional_nn.checking._tolerances import reference_bars

PARAMS = {"a": jnp.array([0.3, -0.7]), "b": jnp.array([[1.1], [0.4], [-2.5]])}
THETA = np.array([0.3, -0.7, 1.1, 0.4, -2.5])  # a, then b: the tree order
BARS = reference_bars("float64")


def smooth(p):
    """Analytic: the complex step applies. Two outputs, a vector and a scalar."""
    return {"v": jnp.sin(p["a"]) * jnp.sum(p["b"]), "s": jnp.sum(jnp.exp(p["b"]))}


def smooth_jacobian(t):
    """d smooth / d theta by hand: rows are the outputs (v0, v1, s), columns the entries."""
    a, b = t[:2], t[2:]
    J = np.zeros((3, 5))
    J[0, 0], J[1, 1] = np.cos(a) * b.sum()
    J[:2, 2:] = np.sin(a)[:, None]
    J[2, 2:] = np.exp(b)
    return J


def through_abs(p):
    return jnp.sum(jnp.abs(p["a"])) + jnp.sum(p["b"] ** 2)


def through_maximum(p):
    return jnp.sum(jnp.maximum(p["a"], 0.0) * 3.0) + jnp.sum(p["b"])


def conj_square(p):
    return jnp.sum(p["a"] * jnp.conj(p["a"])) + jnp.sum(p["b"])  # complex, not analytic


def _flat(f, params=PARAMS):
    return references.flatten_function(f, params)


# -- flatten_function ---------------------------------------------------------------------------


def test_the_flat_function_is_f_of_the_unraveled_vector_with_its_output_raveled():
    flat = _flat(smooth)
    np.testing.assert_array_equal(flat.theta, ravel_pytree(PARAMS)[0])
    assert isinstance(flat.theta, np.ndarray) and flat.theta.dtype == np.float64
    out = smooth(PARAMS)
    np.testing.assert_allclose(flat.fn(THETA), jnp.concatenate([out["s"][None], out["v"]]))
    z = flat.unravel(THETA + 1j)
    assert z["b"].shape == (3, 1) and z["b"].dtype == np.complex128  # complex stays complex
    assert flat.key is smooth and references.flatten_function(smooth, PARAMS, "k").key == "k"


def test_the_structure_tells_apart_shapes_and_dtypes_but_not_values():
    same = _flat(smooth, jax.tree_util.tree_map(lambda x: 2 * x, PARAMS)).structure
    assert same == _flat(smooth).structure
    f32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), PARAMS)
    assert _flat(smooth, f32).structure != same
    assert _flat(smooth, f32).theta.dtype == np.float32
    assert _flat(smooth, {"a": PARAMS["a"], "b": jnp.ones((1, 3))}).structure != same


# -- custom_primal, accepts_complex, richardson_eps, check_dtype --------------------------------


@jax.custom_vjp
def wrong_vjp(x):
    return jnp.sum(jnp.sin(x))


wrong_vjp.defvjp(lambda x: (wrong_vjp(x), x), lambda x, g: (g * jnp.sin(x),))  # not cos


@jax.custom_jvp
def wrong_jvp(x):
    return jnp.sum(x**3)


wrong_jvp.defjvp(lambda xs, ts: (wrong_jvp(xs[0]), jnp.sum(2 * xs[0] * ts[0])))  # not 3x^2


def test_the_primal_of_a_custom_rule_differentiates_to_the_true_derivative():
    x = jnp.array([0.2, -1.3])
    for f, right in ((wrong_vjp, jnp.cos(x)), (wrong_jvp, 3 * x**2)):
        primal = references.custom_primal(f)
        assert primal is not None
        np.testing.assert_allclose(jax.grad(primal)(x), right, rtol=1e-15)
        assert not np.allclose(jax.grad(f)(x), right)  # the rule itself is wrong


def test_no_primal_for_a_plain_function_or_one_with_nondiff_arguments():
    assert references.custom_primal(smooth) is None
    assert references.custom_primal(jax.jit(smooth)) is None
    scaled = jax.custom_vjp(lambda n, x: n * x, nondiff_argnums=(0,))
    assert references.custom_primal(scaled) is None


def _every_leaf(g):
    return lambda p: jnp.sum(g(p["a"])) + jnp.sum(g(p["b"]))


@pytest.mark.parametrize(
    "f, accepts",
    [(smooth, True), (conj_square, True), (through_maximum, True), (through_abs, True),
     (_every_leaf(jnp.abs), False), (_every_leaf(jnp.real), False),
     (_every_leaf(lambda x: (x > 0) * 1.0), False), (_every_leaf(jnp.floor), False)],
    ids=["smooth", "conj", "maximum", "abs_in_one_term", "abs", "real", "comparison",
         "floor_raises"],
)  # fmt: skip
def test_accepts_complex_needs_complex_in_and_complex_out(f, accepts):
    """Necessary, not sufficient: a complex output can hide a real part taken in one term
    (``through_abs``); the validation of the complex step catches those."""
    assert references.accepts_complex(_flat(f)) is accepts


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_richardson_eps_is_the_fifth_root_of_unit_roundoff(dtype):
    """Truncation c h^4 and rounding u / h balance at h ~ u^(1/5)."""
    assert references.richardson_eps(dtype) == pytest.approx(jnp.finfo(dtype).eps ** 0.2)


def test_check_dtype_names_float32_or_float64_and_refuses_the_rest():
    assert references.check_dtype(PARAMS, "w") == "float64"
    assert references.check_dtype({"a": jnp.ones(1, jnp.float32)}, "w") == "float32"
    mixed = {"a": jnp.ones(1, jnp.float32), "b": jnp.ones(1)}
    assert references.check_dtype(mixed, "w") == "float64"
    with pytest.raises(ValueError, match="^w: params has no leaves: nothing to check"):
        references.check_dtype({}, "w")
    with pytest.raises(ValueError, match=r"^w: params of dtype float16; expected float32 or "
                                         r"float64 .*jax_enable_x64"):  # fmt: skip
        references.check_dtype({"a": jnp.ones(2, jnp.float16)}, "w")
    with pytest.raises(ValueError, match="dtype int64"):
        references.check_dtype(np.arange(3), "w")


def test_jitted_reuses_one_wrapper_per_function():
    assert references.jitted(smooth) is references.jitted(smooth)
    np.testing.assert_allclose(references.jitted(smooth)(PARAMS)["s"], smooth(PARAMS)["s"])


# -- evaluate_along -----------------------------------------------------------------------------


def test_unit_directions_evaluate_at_theta_plus_t_s_e_i_and_report_the_step_taken():
    flat = _flat(smooth)
    ts, scale = np.array([1e-3, -2e-3]), np.array([1.0, 2.5])
    values, steps, crossed = references.evaluate_along(flat, np.array([1, 4]), ts, scale)
    assert values.shape == (2, 2, 3) and steps.shape == (2, 2) and crossed.shape == (2,)
    for j, (i, s) in enumerate(zip([1, 4], scale, strict=True)):
        for k, t in enumerate(ts):
            point = THETA.copy()
            point[i] += t * s
            np.testing.assert_allclose(values[j, k], flat.fn(point), rtol=1e-15)
            assert steps[j, k] == point[i] - THETA[i]  # exactly the step taken
    assert not crossed.any()  # no pattern: nothing crossed


def test_vector_directions_and_a_pattern_that_flags_the_steps_that_change_it():
    flat = _flat(smooth)
    V = np.array([[1.0, 0, 0, 0, 0], [0, 0.5, 0, 0, -1.0]])

    def sign_of_a1(t):
        return t[1:2] > -0.7005  # theta_1 = -0.7: a step of -1e-3 * 0.5 or more crosses

    ts = np.array([1e-3, -1e-3])
    values, steps, crossed = references.evaluate_along(flat, V, ts, np.ones(2), (), sign_of_a1)
    np.testing.assert_allclose(values[1, 1], flat.fn(THETA - 1e-3 * V[1]), rtol=1e-15)
    np.testing.assert_allclose(steps, np.broadcast_to(ts, (2, 2)))
    assert crossed.tolist() == [False, False]  # -0.7 - 5e-4 stays above -0.7005
    _, _, crossed = references.evaluate_along(flat, V, 2 * ts, np.ones(2), (), sign_of_a1)
    assert crossed.tolist() == [False, True]  # -0.7 - 1e-3 does not; direction 0 keeps a_1


# -- the estimates ------------------------------------------------------------------------------


def test_the_complex_step_is_the_derivative_to_rounding_with_a_bar_of_16_u():
    flat = _flat(smooth)
    J = smooth_jacobian(THETA)[[2, 0, 1]]  # the flat output: s, then v
    est = references.complex_step_estimate(flat, np.arange(5))
    np.testing.assert_allclose(est.value, J.T, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(est.error, 16 * np.finfo(float).eps * np.abs(est.value))
    assert est.evaluations == 5
    V = np.array([[1.0, -0.5, 0.25, 0, 1.0]])
    np.testing.assert_allclose(references.complex_step_estimate(flat, V).value, V @ J.T,
                               rtol=1e-14)  # fmt: skip


def test_central_is_richardson_extrapolated_fourth_order_not_second():
    """At eps = 1e-2, plain central differences are off by h^2 f'''/6 ~ 1e-5; Richardson's
    (4 D(h) - D(2h)) / 3 by 4 h^4 f^(5)/120 ~ 1e-9."""
    flat = _flat(smooth)
    J = smooth_jacobian(THETA)[[2, 0, 1]]
    est = references.central_estimate(flat, np.arange(5), eps=1e-2)
    err = np.abs(est.value - J.T)
    assert err.max() < 1e-7
    assert err.max() > 1e-13  # it is an estimate: the test measures its truncation
    assert np.all(err <= est.error)  # the bar covers the error it actually makes
    assert est.evaluations == 4 * 5


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_central_bar_covers_the_error_at_the_default_step(dtype):
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), PARAMS)
    flat = _flat(smooth, params)
    J = smooth_jacobian(THETA.astype(dtype).astype(float))[[2, 0, 1]]
    est = references.central_estimate(flat, np.arange(5))
    assert np.all(np.abs(est.value - J.T) <= est.error)
    # and it is no blanket: |D(h) - D(2h)| ~ h^2 |f'''| / 2 with h = u^(1/5) max(1, |theta|)
    assert est.error.max() < {"float64": 1e-5, "float32": 1e-2}[dtype]


# -- best_reference -----------------------------------------------------------------------------


def test_an_analytic_function_gets_the_validated_complex_step():
    ref = references.best_reference(_flat(smooth), np.arange(5), BARS)
    assert ref.name == "complex_step"
    np.testing.assert_allclose(ref.value, smooth_jacobian(THETA)[[2, 0, 1]].T, rtol=1e-14,
                               atol=1e-15)  # fmt: skip
    assert ref.evaluations == 5 + 4  # one per direction, and 4 for the central validation
    assert ref.crossed is None


@pytest.mark.parametrize("f", [through_abs, conj_square], ids=["abs", "conj"])
def test_a_non_analytic_function_falls_back_to_central_differences(f):
    """Both return complex for complex input, but their complex step reads nonsense (0 for
    ``abs``'s real output, 0 for ``w conj(w)``): the validation refuses it."""
    ref = references.best_reference(_flat(f), np.arange(5), BARS)
    assert ref.name == "central"
    g = ravel_pytree(jax.grad(lambda p: jnp.real(f(p)))(PARAMS))[0]
    np.testing.assert_allclose(ref.value[:, 0], g, rtol=1e-8)
    assert np.all(np.abs(ref.value[:, 0] - g) <= ref.error[:, 0])
    assert ref.evaluations == 4 * 5


def test_maximum_is_analytic_piecewise_so_its_complex_step_is_kept_away_from_the_kink():
    """``maximum(w, 0)`` on complex ``w`` is ``w`` or ``0`` by the real part: analytic on each
    side, so the complex step is right there and passes its validation."""
    ref = references.best_reference(_flat(through_maximum), np.arange(5), BARS)
    assert ref.name == "complex_step"
    np.testing.assert_allclose(ref.value[:, 0], [3.0, 0.0, 1.0, 1.0, 1.0], rtol=1e-15)


def test_a_pattern_means_central_differences_with_their_kinks():
    def positive(t):
        return t > 0

    ref = references.best_reference(_flat(smooth), np.arange(5), BARS, pattern=positive)
    assert ref.name == "central" and ref.crossed.shape == (5,) and not ref.crossed.any()


def test_a_top_level_custom_rule_is_checked_against_autodiff_of_its_primal():
    x = jnp.array([0.2, -1.3])
    for f, right in ((wrong_vjp, np.cos(x)), (wrong_jvp, 3 * np.asarray(x) ** 2)):
        primal_grad = np.asarray(jax.grad(references.custom_primal(f))(x))
        ref = references.best_reference(references.flatten_function(f, x), np.arange(2), BARS,
                                        exact=lambda d, g=primal_grad: g[d][:, None])  # fmt: skip
        assert ref.name == "autodiff of the primal"
        np.testing.assert_allclose(ref.value[:, 0], right, rtol=1e-15)
        assert np.all(ref.error == 0) and ref.evaluations is None


def test_a_non_finite_exact_derivative_is_not_taken():
    ref = references.best_reference(_flat(smooth), np.arange(5), BARS,
                                    exact=lambda d: np.full((len(d), 3), np.nan))  # fmt: skip
    assert ref.name == "complex_step"
