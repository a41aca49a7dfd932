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
