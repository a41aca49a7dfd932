"""Schemes, their default steps and costs, the steps themselves, and the argument checks, each
called directly with the label of its caller."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from functional_nn._util._validation import check_finite_leaves
from functional_nn.differences._complex import CROSS_CHECKS
from functional_nn.differences._steps import (
    SCHEMES,
    check_eps_for_dtype,
    check_step_args,
    default_eps,
    evaluations,
    step_sizes,
)

DTYPES = ["float32", "float64"]


def test_the_three_schemes():
    assert SCHEMES == ("forward", "central", "complex_step")


# -- default_eps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    [*DTYPES, "complex64", "complex128", np.float32, jnp.float64],
    ids=[*DTYPES, "complex64", "complex128", "np.float32", "jnp.float64"],
)
def test_default_eps_balances_truncation_and_rounding_for_each_scheme(dtype):
    """Forward differences: error h f''/2 + u f / h, least at h ~ u^(1/2); central: h^2 f'''/6 +
    u f / h, least at h ~ u^(1/3); the complex step subtracts nothing, so h = u. A complex
    dtype steps as its real part."""
    u = float(jnp.finfo(jnp.finfo(dtype).dtype).eps)
    assert default_eps("forward", dtype) == pytest.approx(u**0.5, rel=1e-12)
    assert default_eps("central", dtype) == pytest.approx(u ** (1 / 3), rel=1e-12)
    assert default_eps("complex_step", dtype) == pytest.approx(u, rel=1e-12)


def test_default_eps_refuses_unknown_schemes_and_dtypes_without_a_step():
    expected = r"^default_eps: unknown scheme 'backward'; expected one of \('forward', 'central'"
    with pytest.raises(ValueError, match=expected):
        default_eps("backward", "float64")
    with pytest.raises(ValueError, match="^default_eps: float16 has 11 significant bits"):
        default_eps("central", "float16")
    with pytest.raises(ValueError, match="^default_eps: parameters must be floating point; got "
                                         "int32"):  # fmt: skip
        default_eps("central", "int32")


# -- evaluations --------------------------------------------------------------------------------


@given(st.integers(0, 10**6))
def test_evaluations_per_scheme(P):
    assert evaluations("forward", P) == P + 1  # f(theta) once, then one step per entry
    assert evaluations("central", P) == 2 * P  # +-h per entry
    assert evaluations("complex_step", P) == P + CROSS_CHECKS  # one per entry, plus the check


def test_evaluations_refuses_an_unknown_scheme():
    with pytest.raises(ValueError, match="^evaluations: unknown scheme 'Central'"):
        evaluations("Central", 3)


# -- step_sizes ---------------------------------------------------------------------------------

FLOATS = st.floats(-1e8, 1e8, allow_nan=False, allow_subnormal=False)
THETA = hnp.arrays(np.float64, st.integers(1, 6), elements=FLOATS)


@given(THETA, st.sampled_from([1e-2, 6e-6, 1.5e-8]), st.sampled_from(["forward", "central"]))
def test_steps_scale_with_max_one_abs_theta_and_are_exact_in_floating_point(theta, eps, scheme):
    h = np.asarray(step_sizes(jnp.asarray(theta), scheme, eps))
    scale = np.maximum(1.0, np.abs(theta))
    # the step actually taken: theta + h is a float, and subtracting theta gives h back exactly
    np.testing.assert_array_equal((theta + h) - theta, h)
    # and it is the requested step up to the rounding of theta + eps * scale
    ulp = np.spacing(np.abs(theta) + eps * scale)
    assert np.all(np.abs(h - eps * scale) <= ulp)


def test_the_complex_step_is_not_rounded_and_float32_steps_round_in_float32():
    theta = jnp.array([0.1, 3.3, -7.7, 0.0])
    eps = 1e-8
    exact = eps * np.maximum(1.0, np.abs(np.asarray(theta)))
    np.testing.assert_array_equal(step_sizes(theta, "complex_step", eps), exact)
    central = np.asarray(step_sizes(theta, "central", eps))
    np.testing.assert_array_equal(central, (np.asarray(theta) + exact) - np.asarray(theta))
    assert np.any(central != exact)  # rounding did change some step: the test can tell
    t32 = theta.astype(jnp.float32)
    h32 = step_sizes(t32, "central", 1e-3)
    assert h32.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray((t32 + h32) - t32), np.asarray(h32))


# -- check_step_args ----------------------------------------------------------------------------


def test_check_step_args_returns_eps_as_a_float_and_chunk_size_as_an_int():
    assert check_step_args("central", None, None, "w") == (None, None)
    eps, chunk = check_step_args("forward", np.float32(0.25), np.int64(8), "w")
    assert (eps, chunk) == (0.25, 8) and type(eps) is float and type(chunk) is int
    assert check_step_args("complex_step", jnp.asarray(1e-5), 1, "w")[0] == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "scheme, eps, chunk, error, match",
    [
        ("sideways", None, None, ValueError, r"^fd: unknown scheme 'sideways'"),
        (
            "central",
            0.0,
            None,
            ValueError,
            r"^fd: eps must be a real number in \(0.0, 1.0\); got 0",
        ),
        (
            "central",
            1.0,
            None,
            ValueError,
            r"^fd: eps must be a real number in \(0.0, 1.0\); got 1",
        ),
        ("central", -1e-6, None, ValueError, r"got -1e-06"),
        ("central", float("nan"), None, ValueError, r"got nan"),
        ("central", True, None, TypeError, r"^fd: eps must be a real number.*True \(bool\)"),
        ("central", "1e-3", None, TypeError, r"eps must be a real number.*'1e-3' \(str\)"),
        ("central", None, 0, ValueError, r"^fd: chunk_size must be an int >= 1; got 0"),
        ("central", None, 2.0, TypeError, r"^fd: chunk_size must be an int >= 1; got 2.0"),
        ("central", None, True, TypeError, r"chunk_size must be an int >= 1; got True \(a bool"),
    ],
)
def test_check_step_args_refuses_bad_arguments_naming_the_caller(scheme, eps, chunk, error, match):
    with pytest.raises(error, match=match):
        check_step_args(scheme, eps, chunk, "fd")


def test_a_traced_eps_is_the_callers_to_check():
    seen = []

    @jax.jit
    def f(eps):
        seen.append(check_step_args("central", eps, None, "fd")[0])
        check_eps_for_dtype("central", eps, "float32", "fd")  # would refuse 1e-30 if concrete
        return eps

    f(1e-30)
    assert isinstance(seen[0], jax.core.Tracer)


# -- check_eps_for_dtype ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [*DTYPES, "complex64"])
@pytest.mark.parametrize("scheme", ["forward", "central"])
def test_an_eps_below_machine_epsilon_is_refused_and_machine_epsilon_is_not(scheme, dtype):
    real = jnp.finfo(dtype).dtype.name
    u = float(jnp.finfo(dtype).eps)
    check_eps_for_dtype(scheme, u, dtype, "fd")
    check_eps_for_dtype(scheme, None, dtype, "fd")
    with pytest.raises(ValueError, match=rf"^fd: eps={u / 2!r} is below the machine epsilon of "
                                         rf"{real} \({u:.1e}\).* every {scheme} difference.*use "
                                         rf"eps >= {u:.1e} \(default "
                                         rf"{default_eps(scheme, dtype):.1e}\)"):  # fmt: skip
        check_eps_for_dtype(scheme, u / 2, dtype, "fd")


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_complex_step_eps_is_refused_only_where_h_underflows(dtype):
    floor = math.sqrt(float(jnp.finfo(dtype).tiny))
    check_eps_for_dtype("complex_step", floor, dtype, "cs")
    check_eps_for_dtype("complex_step", float(jnp.finfo(dtype).eps) / 1e3, dtype, "cs")
    with pytest.raises(ValueError, match=rf"^cs: eps=.* too small for the complex step in "
                                         rf"{dtype}.*sqrt\(tiny\) = {floor:.1e}"):  # fmt: skip
        check_eps_for_dtype("complex_step", floor / 2, dtype, "cs")


def test_a_complex_step_of_1e_minus_30_is_fine_in_float64_but_underflows_in_float32():
    check_eps_for_dtype("complex_step", 1e-30, "float64", "cs")
    with pytest.raises(ValueError, match="complex step in float32"):
        check_eps_for_dtype("complex_step", 1e-30, "float32", "cs")


def test_check_eps_for_dtype_refuses_a_dtype_without_a_step():
    with pytest.raises(ValueError, match="^cs: bfloat16 has 8 significant bits"):
        check_eps_for_dtype("central", 1e-3, jnp.bfloat16, "cs")


# -- check_finite_leaves ------------------------------------------------------------------------


def test_check_finite_leaves_names_the_first_leaf_with_a_non_finite_entry():
    good = {"a": jnp.ones(2), "b": (np.ones(3), 2.0, 3)}
    check_finite_leaves(good, "params", "fd")
    bad = {"a": jnp.ones(2), "b": (np.array([1.0, np.inf, np.nan]), float("nan"))}
    message = r"^fd: params\['b'\]\[0\] has 2 non-finite entries \(nan or inf\) of 3; every entry"
    with pytest.raises(ValueError, match=message + " must be finite"):
        check_finite_leaves(bad, "params", "fd")
    with pytest.raises(ValueError, match=r"^fd: x\[1\] has 1 non-finite entries .* of 1"):
        check_finite_leaves([1.0, float("inf")], "x", "fd")
    with pytest.raises(ValueError, match=r"^fd: z has 1 non-finite"):
        check_finite_leaves(jnp.array([1.0 + 1j, complex(0, np.nan)]), "z", "fd")


def test_check_finite_leaves_lets_tracers_and_integer_leaves_pass():
    @jax.jit
    def f(p):
        check_finite_leaves(p, "params", "fd")
        return p["w"] * 2

    np.testing.assert_array_equal(f({"w": jnp.array([jnp.nan])}), [jnp.nan])
    check_finite_leaves({"n": np.arange(3), "k": 7}, "params", "fd")
