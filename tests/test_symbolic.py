"""fnn.symbolic (issue 36, item 1): the closed form read from a JAX function's program equals
the textbook expression, checked where SymPy's simplifier cannot be trusted to decide it:
their difference evaluated with mpmath at 50 digits at 20 random points (both signs, up to
|x| = 30) stays below 1e-40."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp

import functional_nn as fnn

RNG = np.random.default_rng(36)


def points(n_args: int, positive: tuple = ()) -> list[list[float]]:
    out = []
    for _ in range(20):
        p = list(RNG.uniform(-30, 30, n_args) * RNG.choice([1e-3, 0.1, 1.0], n_args))
        out.append([abs(v) % 1 + 1e-3 if i in positive else v for i, v in enumerate(p)])
    return out


def agree(read, textbook, symbols, positive=()) -> None:
    read, textbook = sp.sympify(read), sp.sympify(textbook)
    for p in points(len(symbols), positive):
        at = dict(zip(symbols, (sp.Rational(v) for v in p), strict=True))
        gap = sp.N((read - textbook).subs(at), 50)
        assert abs(gap) < 1e-40, (p, read, textbook, gap)


x = sp.Symbol("x", real=True)


def sigma(t):
    return 1 / (1 + sp.exp(-t))


@pytest.mark.parametrize(
    ("fn", "textbook"),
    [
        (jax.nn.softplus, sp.log(1 + sp.exp(x))),
        (jax.nn.sigmoid, sigma(x)),
        (jax.nn.silu, x * sigma(x)),
        (jax.nn.relu, sp.Max(x, 0)),
        (jnp.tanh, sp.tanh(x)),
    ],
    ids=["softplus", "sigmoid", "silu", "relu", "tanh"],
)
def test_jax_nn_functions_read_as_their_textbook_forms(fn, textbook):
    agree(fnn.symbolic(fn, 0.0), textbook, [x])


def held(c: float) -> sp.Rational:
    """The exact rational of ``c`` as the program holds it (float64 with x64 on, float32
    off)."""
    return sp.Rational(float(np.asarray(c, jnp.asarray(0.0).dtype)))


def test_gelu_reads_as_the_textbook_with_the_program_s_float_constants():
    exact = fnn.symbolic(lambda x: jax.nn.gelu(x, approximate=False), 0.0)
    agree(exact, x / 2 * (1 + sp.erf(held(np.sqrt(0.5)) * x)), [x])
    tanh_form = fnn.symbolic(jax.nn.gelu, 0.0)  # jax's default
    k, a = held(np.sqrt(2 / np.pi)), held(0.044715)
    agree(tanh_form, x / 2 * (1 + sp.tanh(k * (x + a * x**3))), [x])
    assert tanh_form.has(k * a)  # the product of the two rationals, exact: no float entered


def test_a_three_class_log_softmax_reads_as_three_expressions():
    read = fnn.symbolic(jax.nn.log_softmax, jnp.zeros(3))
    assert read.shape == (3,)
    z = sp.symbols("x_0 x_1 x_2", real=True)
    lse = sp.log(sum(sp.exp(t) for t in z))
    for i in range(3):
        agree(read[i], z[i] - lse, list(z))


def test_the_lecture_s_sigmoid_bce_and_mse_read_as_the_hand_written_forms():
    z = sp.Symbol("z", real=True)
    agree(fnn.symbolic(fnn.sigmoid, 0.0), sigma(z), [z])
    y_hat, y = sp.Symbol("y_hat_0", real=True), sp.Symbol("y_0", real=True)
    read = fnn.symbolic(fnn.bce.value, jnp.full(1, 0.5), jnp.full(1, 0.3))
    bce = -(y * sp.log(y_hat) + (1 - y) * sp.log(1 - y_hat))
    agree(read, bce, [y_hat, y], positive=(0, 1))  # y_hat in (0, 1), y soft labels in (0, 1)
    read = fnn.symbolic(fnn.mse.value, jnp.zeros(2), jnp.zeros(2))
    a = sp.symbols("y_hat_0 y_hat_1", real=True)
    b = sp.symbols("y_0 y_1", real=True)
    agree(read, sum((p - q) ** 2 for p, q in zip(a, b, strict=True)), [*a, *b])


def test_symbols_are_named_after_the_parameters_and_constants_are_exact():
    def f(weight, bias):
        return jnp.tanh(0.1 * weight + bias)

    read = fnn.symbolic(f, 0.0, 0.0)
    assert {s.name for s in read.free_symbols} == {"weight", "bias"}
    assert sp.Rational(0.1) in read.atoms(sp.Rational) or sp.Rational(
        float(np.float32(0.1))) in read.atoms(sp.Rational)  # fmt: skip
    assert fnn.symbolic(lambda t: jnp.where(t > 1.0, t, -t), 0.0).has(sp.Piecewise)


def test_an_unsupported_primitive_is_named():
    with pytest.raises(ValueError, match="the primitive 'erf_inv'"):
        fnn.symbolic(jax.lax.erf_inv, 0.1)
    with pytest.raises(ValueError, match="example arguments"):
        fnn.symbolic(jnp.exp)
    with pytest.raises(ValueError, match="rounding"):
        fnn.symbolic(lambda t: t.astype(jnp.int32).astype(jnp.float32), 0.5)


# -- check_symbolic (issue 36, item 2) ----------------------------------------------------------


@jax.custom_jvp
def stable_softplus(x):
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


stable_softplus.defjvp(lambda p, t: (stable_softplus(p[0]), jax.nn.sigmoid(p[0]) * t[0]))


@jax.custom_jvp
def cut_softplus(x):  # its tangent 0 below -20, where the true one is exp(x): normal to -87
    return stable_softplus(x)


cut_softplus.defjvp(
    lambda p, t: (cut_softplus(p[0]), jnp.where(p[0] < -20, 0.0, jax.nn.sigmoid(p[0])) * t[0])
)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_and_a_stable_softplus_pass_over_the_whole_range(dtype):
    for fn in (jnp.exp, stable_softplus):
        report = fnn.check_symbolic(fn, dtype=dtype)
        assert report.ok, report
        assert not report.flags, report.flags[:3]
        assert {r.quantity for r in report.rows} == {"value", "d1"}
        assert sum(r.points for r in report.rows if r.quantity == "value") > 500


def test_a_naive_softplus_fails_where_it_overflows_and_where_it_rounds_to_zero():
    report = fnn.check_symbolic(lambda x: jnp.log(1 + jnp.exp(x)))
    assert not report.ok
    flagged = {(f["quantity"], np.isinf(f["jax"]), f["jax"] == 0) for f in report.flags}
    assert ("value", True, False) in flagged  # inf where the exact value, x, is finite
    assert ("value", False, True) in flagged  # 0 where it is exp(x), a normal number
    assert any(r.failed and r.range.startswith("+[100") for r in report.rows), report


def test_a_tangent_cut_below_minus_20_is_named_with_its_range():
    report = fnn.check_symbolic(cut_softplus)
    assert not report.ok
    bad = [r for r in report.rows if r.failed]
    assert bad and all(r.quantity == "d1" and r.range.startswith("-") for r in bad), report
    xs = [f["x"] for f in report.flags]
    assert xs and max(xs) < -20 and min(xs) > -90  # exp(x) is normal in float32 down to -87


def test_jax_nn_sigmoid_s_float32_gradient_is_zero_from_17_where_the_exact_one_is_normal():
    assert float(jax.grad(jax.nn.sigmoid)(jnp.float32(17.0))) == 0.0
    report = fnn.check_symbolic(jax.nn.sigmoid)
    assert not report.ok
    zeros = sorted(f["x"] for f in report.flags if f["quantity"] == "d1" and f["jax"] == 0)
    assert zeros and 16 < zeros[0] < 18, zeros[:3]  # named from where it starts
    assert fnn.check_symbolic(jax.nn.sigmoid, atol=1e-6).ok  # absolute accuracy: accepted
    tanh = fnn.check_symbolic(jnp.tanh)
    # tanh's: 1 - tanh(x)**2 after tanh rounds to 1 (from x = 9 in float32): 0, or, in XLA's
    # vectorized tanh over a batch of points, a value millions of ulps off
    [row] = [r for r in tanh.rows if r.quantity == "d1" and r.range == "+[1, 100)"]
    assert not tanh.ok and row.failed and row.max_ulp > 1e5 and row.worst_x > 8, tanh
    assert '"ok": false' in tanh.to_json() and "FAILED" in str(tanh)


def test_check_symbolic_refuses_what_it_cannot_judge():
    with pytest.raises(ValueError, match="dtype must be"):
        fnn.check_symbolic(jnp.exp, dtype="bfloat16")
    with pytest.raises(ValueError, match="order must be"):
        fnn.check_symbolic(jnp.exp, order=3)
    with pytest.raises(ValueError, match="the primitive 'erf_inv'"):
        fnn.check_symbolic(jax.lax.erf_inv)
