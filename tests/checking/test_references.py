"""The references of the checkers, leaf by leaf, each against a closed form or autodiff: the
primal of a custom rule, the dtype whose bars hold, evaluations along unit and block
directions, the complex step and Richardson central differences with their error bars, the
shared ladder, the validation of the complex step, and which reference is picked for which
function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn.checking import _references as references
from functional_nn.checking._references import Directions, LeafReferences
from functional_nn.differences._blocks import LeafFunction
from functional_nn.differences._estimates import richardson_ladder as richardson

PARAMS = {"a": jnp.array([0.3, -0.7]), "b": jnp.array([[1.1], [0.4], [-2.5]])}
A, B = 0, 1  # the leaves in tree order
U64 = float(jnp.finfo(jnp.float64).eps)


def smooth(p):
    """Analytic: the complex step applies. Two outputs, raveled ``s`` then ``v`` (keys sorted)."""
    return {"v": jnp.sin(p["a"]) * jnp.sum(p["b"]), "s": jnp.sum(jnp.exp(p["b"]))}


def smooth_jacobian(params):
    """d smooth / d leaf by hand, per leaf: ``(m, leaf size)``, rows the raveled outputs."""
    a = np.asarray(params["a"], np.float64)
    b = np.asarray(params["b"], np.float64).ravel()
    Ja = np.zeros((3, 2))
    Ja[1, 0], Ja[2, 1] = np.cos(a) * b.sum()
    Jb = np.zeros((3, 3))
    Jb[0] = np.exp(b)
    Jb[1:] = np.sin(a)[:, None]
    return [Ja, Jb]


def through_abs(p):
    return jnp.sum(jnp.abs(p["a"])) + jnp.sum(p["b"] ** 2)


def through_maximum(p):
    return jnp.sum(jnp.maximum(p["a"], 0.0) * 3.0) + jnp.sum(p["b"])


def conj_square(p):
    return jnp.sum(p["a"] * jnp.conj(p["a"])) + jnp.sum(p["b"] * jnp.conj(p["b"]))


def _refs(f, params=PARAMS, dtype="float64", **kw):
    pattern = kw.pop("pattern", None)
    return LeafReferences(LeafFunction(f, params, pattern=pattern), dtype, (0,), **kw)


def _unit(n):
    return Directions(index=np.arange(n))


def _dense(d, l, params=PARAMS):
    """The directions of ``d`` as rows ``(n, leaf size)``."""
    size = jax.tree_util.tree_leaves(params)[l].size
    if d.index is not None:
        return np.eye(size)[d.index]
    return np.asarray(d.blocks, np.float64).reshape(d.n, -1)


# -- custom_primal, ladder_steps, richardson_eps, check_dtype, bars_dtype, jitted ------------------


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_ladder_runs_from_half_down_to_ten_root_u(dtype):
    hs = references.ladder_steps(dtype)
    u = float(jnp.finfo(dtype).eps)
    assert hs.size == references.LADDER
    np.testing.assert_allclose([hs[0], hs[-1]], [0.5, 10 * np.sqrt(u)], rtol=1e-12)
    ratios = hs[:-1] / hs[1:]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)  # geometric
    assert ratios[0] > 1


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
                                         r"float64$"):  # fmt: skip
        references.check_dtype({"a": jnp.ones(2, jnp.float16)}, "w")  # x64 is on: no hint
    with pytest.raises(ValueError, match="dtype int64"):
        references.check_dtype(np.arange(3), "w")


def test_the_bars_follow_the_output_where_it_is_less_precise_than_the_parameters():
    assert references.bars_dtype("float64", jnp.float32) == "float32"
    assert references.bars_dtype("float64", jnp.float64) == "float64"
    assert references.bars_dtype("float32", jnp.float64) == "float32"
    assert references.bars_dtype("float64", jnp.int32) == "float64"  # no rounding to follow
    lf = LeafFunction(lambda p: jnp.sum(p["a"]).astype(jnp.float32), PARAMS)
    refs = LeafReferences(lf, "float64", (0,))
    assert refs.dtype == "float32" and refs.u == float(jnp.finfo(jnp.float32).eps)


def test_jitted_reuses_one_wrapper_per_function():
    assert references.jitted(smooth) is references.jitted(smooth)
    np.testing.assert_allclose(references.jitted(smooth)(PARAMS)["s"], smooth(PARAMS)["s"])


# -- Directions --------------------------------------------------------------------------------


def test_directions_are_entries_or_blocks_and_along_is_the_inner_product():
    refs = _refs(smooth)
    g = np.arange(3.0).reshape(3, 1) - 1
    unit = Directions(index=np.array([2, 0]))
    assert unit.n == 2
    np.testing.assert_array_equal(unit.along(g), [1.0, -1.0])
    blocks = refs.random(B, 20)
    assert blocks.n == 20 and blocks.dense(3, 5).shape == (2, 3, 1)
    np.testing.assert_allclose(blocks.along(g), _dense(blocks, B) @ g.ravel(), rtol=1e-15)
    with pytest.raises(ValueError, match="unit directions have no dense blocks"):
        unit.dense(0, 1)


def test_random_directions_depend_on_the_seed_and_the_leaf_not_on_the_order_of_calls():
    first = np.asarray(_refs(smooth).random(B, 3).blocks)
    refs = _refs(smooth)
    refs.random(A, 3)
    np.testing.assert_array_equal(np.asarray(refs.random(B, 3).blocks), first)
    other = LeafReferences(LeafFunction(smooth, PARAMS), "float64", (1,))
    assert not np.array_equal(np.asarray(other.random(B, 3).blocks), first)


# -- along: the evaluations --------------------------------------------------------------------


def test_unit_directions_evaluate_at_theta_plus_t_s_e_i_and_report_the_step_taken():
    refs = _refs(smooth)
    ts = np.array([1e-3, -2e-3])
    d = Directions(index=np.array([0, 2]))
    values, steps, crossed = refs.along(B, d, ts)
    assert values.shape == (2, 2, 3) and steps.shape == (2, 2) and crossed.shape == (2,)
    b = np.asarray(PARAMS["b"]).ravel()
    for j, i in enumerate([0, 2]):
        for kk, t in enumerate(ts):
            point = b.copy()
            point[i] += t * max(1.0, abs(b[i]))  # the step scale max(1, |theta_i|)
            moved = {"a": PARAMS["a"], "b": jnp.asarray(point.reshape(3, 1))}
            out = smooth(moved)
            np.testing.assert_allclose(values[j, kk], [out["s"], *out["v"]], rtol=1e-15)
            assert steps[j, kk] == point[i] - b[i]  # exactly the step taken
    assert not crossed.any()  # no pattern: nothing crossed


def test_block_directions_move_the_leaf_by_t_s_v_with_s_the_leafs_scale():
    refs = _refs(smooth)
    d = refs.random(B, 2)
    values, steps, _ = refs.along(B, d, np.array([1e-2]))
    s = 2.5  # max |b|: a whole leaf moves relative to its own size
    assert refs.scale(B) == s and refs.scale(A) == 0.7
    zeros = _refs(smooth, {"a": jnp.zeros(2), "b": PARAMS["b"]})
    assert zeros.scale(A) == 1.0  # a leaf of zeros: absolute steps
    np.testing.assert_allclose(steps, 1e-2 * s)
    V = np.asarray(d.blocks)
    for j in range(2):
        out = smooth({"a": PARAMS["a"], "b": PARAMS["b"] + 1e-2 * s * V[j]})
        np.testing.assert_allclose(values[j, 0], [out["s"], *out["v"]], rtol=1e-15)


def test_a_pattern_flags_the_directions_whose_steps_change_it():
    def sign_of_a1(p):
        return p["a"][1:] > -0.7005  # a_1 = -0.7: a step of -5e-4 or more crosses

    refs = _refs(smooth, pattern=sign_of_a1)
    d = Directions(index=np.array([0, 1]))
    _, _, crossed = refs.along(A, d, np.array([4e-4, -4e-4]))
    assert crossed.tolist() == [False, False]
    _, _, crossed = refs.along(A, d, np.array([6e-4, -6e-4]))
    assert crossed.tolist() == [False, True]  # direction 0 keeps a_1 where it was


# -- the estimates -----------------------------------------------------------------------------


@pytest.mark.parametrize("l", [A, B], ids=["a", "b"])
def test_the_complex_step_is_the_derivative_to_rounding_with_a_bar_of_16_u(l):
    refs = _refs(smooth)
    J = smooth_jacobian(PARAMS)[l]
    for d in (_unit(J.shape[1]), refs.random(l, 3)):
        est = refs.complex(l, d)
        np.testing.assert_allclose(est.value, _dense(d, l) @ J.T, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(est.error, 16 * U64 * np.abs(est.value))
        assert est.name == "complex_step" and est.evaluations == d.n


def test_central_is_richardson_extrapolated_fourth_order_not_second():
    """At the default step u^(1/5) ~ 7e-4 (times max(1, |theta|) = 2.5 for b), plain central
    differences would be off by h^2 f'''/6 ~ 1e-6; Richardson's by O(h^4) ~ 1e-12."""
    refs = _refs(smooth)
    J = smooth_jacobian(PARAMS)[B]
    est = refs.central(B, _unit(3))
    err = np.abs(est.value - J.T)
    assert err.max() < 1e-9
    assert np.all(err <= est.error)  # the bar covers the error it actually makes
    assert est.evaluations == 4 * 3 and est.crossed is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("l", [A, B], ids=["a", "b"])
def test_the_central_bar_covers_the_error_at_the_default_step(dtype, l):
    params = jax.tree_util.tree_map(lambda x: x.astype(dtype), PARAMS)
    refs = _refs(smooth, params, dtype)
    J = smooth_jacobian(params)[l]
    for d in (_unit(J.shape[1]), refs.random(l, 4)):
        est = refs.central(l, d)
        assert np.all(np.abs(est.value - _dense(d, l, params) @ J.T) <= est.error)
        # and it is no blanket: |D(h) - D(2h)| ~ h^2 |f'''| / 2, h = u^(1/5) max(1, |theta|)
        assert est.error.max() < {"float64": 1e-5, "float32": 1e-1}[dtype]


def test_the_ladder_is_shared_its_direction_is_the_first_random_one_and_it_is_made_once():
    refs = _refs(smooth)
    lad = refs.ladder(B)
    assert refs.ladder(B) is lad  # cached
    np.testing.assert_array_equal(
        np.asarray(lad.v.blocks), np.asarray(refs.random(B, 4).blocks)[:1]
    )
    np.testing.assert_allclose(lad.hs, references.ladder_steps("float64") * refs.scale(B))
    assert lad.plus.shape == lad.minus.shape == (references.LADDER, 3)
    assert lad.evaluations == 2 * references.LADDER and not lad.crossed
    v = np.asarray(lad.v.blocks)[0]
    out = smooth({"a": PARAMS["a"], "b": PARAMS["b"] - lad.hs[3] * v})
    np.testing.assert_allclose(lad.minus[3], [out["s"], *out["v"]], rtol=1e-15)


# -- which reference ---------------------------------------------------------------------------


def test_an_analytic_function_gets_the_validated_complex_step():
    refs = _refs(smooth)
    ref = refs.reference(B, _unit(3))
    assert ref.name == "complex_step" and ref.crossed is None
    np.testing.assert_allclose(ref.value, smooth_jacobian(PARAMS)[B].T, rtol=1e-14, atol=1e-15)
    assert refs.complex_ok(B)
    # validated once, against the ladder: 2 * LADDER evaluations and one complex step
    before = refs.lf.evaluations
    assert refs.reference(B, _unit(3)).name == "complex_step"
    assert refs.lf.evaluations - before == 3


@pytest.mark.parametrize(
    "f, l, name",
    [(through_abs, A, "a"), (conj_square, A, "a"), (conj_square, B, "b")],
    ids=["abs", "conj_a", "conj_b"],
)  # fmt: skip
def test_a_non_analytic_function_falls_back_to_central_differences(f, l, name):
    """``abs`` returns its real part for complex input, ``w conj(w)`` a real value: their
    complex steps read nothing, and the validation refuses them, leaf by leaf."""
    refs = _refs(f)
    g = np.asarray(jax.grad(lambda p: jnp.real(f(p)))(PARAMS)[name]).ravel()
    ref = refs.reference(l, _unit(g.size))
    assert ref.name == "central" and not refs.complex_ok(l)
    np.testing.assert_allclose(ref.value[:, 0], g, rtol=1e-8)
    assert np.all(np.abs(ref.value[:, 0] - g) <= ref.error[:, 0])


def test_the_complex_step_is_decided_per_leaf():
    """``through_abs`` takes ``a`` through ``abs`` but ``b`` through ``b ** 2``: leaf ``b``
    keeps its complex step."""
    refs = _refs(through_abs)
    assert refs.reference(B, _unit(3)).name == "complex_step" and refs.complex_ok(B)
    assert refs.reference(A, _unit(2)).name == "central"


def test_maximum_is_analytic_piecewise_so_its_complex_step_is_kept_away_from_the_kink():
    """``maximum(w, 0)`` on complex ``w`` is ``w`` or ``0`` by the real part: analytic on each
    side, so the complex step is right there and passes its validation."""
    ref = _refs(through_maximum).reference(A, _unit(2))
    assert ref.name == "complex_step"
    np.testing.assert_allclose(ref.value[:, 0], [3.0, 0.0], rtol=1e-15)


def test_a_pattern_means_central_differences_with_their_kinks():
    ref = _refs(smooth, pattern=lambda p: p["a"] > 0).reference(A, _unit(2))
    assert ref.name == "central" and ref.crossed.shape == (2,) and not ref.crossed.any()


def test_at_research_scale_block_directions_take_central_differences_only():
    refs = _refs(smooth, complex_blocks=False)
    assert refs.reference(B, refs.random(B, 4)).name == "central"
    assert refs.reference(B, _unit(3)).name == "complex_step"  # unit directions keep it


def test_a_top_level_custom_rule_is_checked_against_autodiff_of_its_primal():
    x = jnp.array([0.2, -1.3])
    for f, right in ((wrong_vjp, np.cos(x)), (wrong_jvp, 3 * np.asarray(x) ** 2)):
        primal_grad = np.asarray(jax.grad(references.custom_primal(f))(x))
        exact = lambda l, d, g=primal_grad: _dense(d, 0, x) @ g[:, None]  # noqa: E731
        refs = LeafReferences(LeafFunction(f, x), "float64", (0,), exact=exact)
        ref = refs.reference(0, _unit(2))
        assert ref.name == "autodiff of the primal"
        np.testing.assert_allclose(ref.value[:, 0], right, rtol=1e-15)
        assert np.all(ref.error == 0) and ref.evaluations is None


def test_a_non_finite_exact_derivative_is_not_taken():
    refs = _refs(smooth, exact=lambda l, d: np.full((d.n, 3), np.nan))
    assert refs.reference(A, _unit(2)).name == "complex_step"


# -- the first cause of false failures: a validator coarser than what it validates -------------


@pytest.mark.parametrize(
    "f", [lambda x: jnp.sin(jnp.expm1(x)), jnp.sinh, jnp.cosh, lambda x: x**4.5],
    ids=["sin_expm1", "sinh", "cosh", "pow"],
)  # fmt: skip
def test_a_fast_varying_function_in_float32_keeps_its_exact_complex_step(f):
    """At x ~ 4.5, float32's Richardson step u^(1/5) |x| ~ 0.19 moves expm1(x) by ~20 (sin's
    argument by radians): the ladder cannot resolve the derivative, so it must refute nothing,
    and the complex step, exact here, is the reference. The old validator rejected it against
    central differences that were off by 1e2 with a bar that did not cover it."""
    x = jnp.array([4.2, 4.6, 0.3, 4.9], jnp.float32)
    refs = LeafReferences(LeafFunction(lambda p: jnp.sum(f(p)), x), "float32", (0,))
    ref = refs.reference(0, _unit(4))
    x64 = np.asarray(x, np.float64)
    exact = np.asarray(jax.grad(lambda t: jnp.sum(f(t)))(jnp.asarray(x64)))
    assert ref.name == "complex_step"
    np.testing.assert_allclose(ref.value[:, 0], exact, rtol=1e-4)
    # the ladder that validated it claims no more than it shows: its bar covers its error
    # (infinite where it could not resolve the derivative, as for sin(expm1(x)))
    lad = refs.ladder(0)
    value, error = richardson(lad.plus[None], lad.minus[None], lad.hs[None], refs.u)
    along = exact @ np.asarray(lad.v.blocks, np.float64)[0]
    assert abs(value[0, 0] - along) <= error[0, 0] + 1e-3 * abs(along)


def test_reference_name_names_every_reference_used_most_exact_first():
    from functional_nn.checking._references import reference_name

    assert reference_name(["central", "central"]) == "central"
    assert reference_name(["central", "complex_step"]) == "complex_step + central"
    assert reference_name(["complex_step", "central"]) == "complex_step + central"
    assert reference_name(["central", "autodiff of the primal"]) == (
        "autodiff of the primal + central"
    )
    assert reference_name([]) == "-"


def test_the_candidates_rounding_along_a_direction_is_16_u_sum_of_magnitudes():
    """A dense direction's <g, v> cancels; the candidate's float32 rounding is bounded by
    16 u sum |g_i v_i|, which grows like sqrt(n) times |<g, v>| (Directions.rounding)."""
    g = jnp.asarray(np.random.default_rng(3).standard_normal((64, 32)), jnp.float32)
    lf = LeafFunction(lambda p: jnp.sum(p["w"] * g), {"w": g})
    refs = LeafReferences(lf, "float32", (5,))
    d = refs.random(0, 3)
    V = np.asarray(d.blocks).reshape(3, -1)
    u = float(jnp.finfo(jnp.float32).eps)
    want = 16 * u * np.abs(V) @ np.abs(np.asarray(g, np.float64).ravel())
    np.testing.assert_allclose(d.rounding(g), want, rtol=1e-12)
    assert np.all(d.rounding(g) > 16 * u * np.abs(d.along(g)))  # cancellation
    unit = Directions(index=np.array([0, 5]))
    np.testing.assert_allclose(unit.rounding(g), 16 * u * np.abs(np.asarray(g).ravel()[[0, 5]]))
