"""``promote(f)``: the same program with every floating type raised to float64 (issue 34,
item 1). The oracle is the same function written by hand in float64: the promoted program of a
bfloat16-computing ``f`` equals it to 1e-12, through every construct the promise names."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn.program import CannotPromote, compute_dtypes, promote

bf16, f32, f64 = jnp.bfloat16, jnp.float32, jnp.float64
RNG = np.random.default_rng(0)
DATA = RNG.standard_normal((5, 4))  # float64 data closed over: its values enter exactly
W = RNG.standard_normal((4, 3)).astype(np.float32)
V = RNG.standard_normal(3).astype(np.float32)


def close(a, b, tol=1e-12):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


def mixed(w, v):
    """float32 parameters, the forward in bfloat16 as mixed precision has it."""
    x = jnp.asarray(DATA).astype(bf16)
    h = jnp.tanh(jnp.dot(x, w.astype(bf16), preferred_element_type=f32)).astype(bf16)
    z = jax.lax.reduce_precision(h @ v.astype(bf16), exponent_bits=5, mantissa_bits=10)
    return jnp.sum(jax.nn.softplus(z.astype(f32)) * 0.125)


def mixed64(w, v):
    x = jnp.asarray(DATA, f64)
    h = jnp.tanh(x @ w)
    return jnp.sum(jax.nn.softplus(h @ v) * 0.125)


def test_a_bfloat16_forward_equals_the_same_function_written_in_float64():
    w, v = jnp.asarray(W), jnp.asarray(V)
    out = promote(mixed)(w, v)
    assert out.dtype == f64
    close(out, mixed64(jnp.asarray(W, f64), jnp.asarray(V, f64)))
    assert abs(float(mixed(w, v)) - float(out)) > 1e-4  # bfloat16 itself is far from it
    assert jax.config.jax_enable_x64  # the process's setting as it was (on in the tests)


def test_a_python_constant_is_the_float_the_program_holds():
    """JAX rounds a Python scalar to the program's dtype when it traces: in a float32 program
    0.1 is float32(0.1), and that value is what is raised (exactly)."""
    out = promote(lambda x: x * 0.1)(jnp.ones((), f32))
    assert float(out) == float(np.float32(0.1)) != 0.1


def test_gradients_of_the_promoted_program_are_the_float64_gradients():
    g = jax.grad(lambda w, v: promote(mixed)(w, v), argnums=(0, 1))
    want = jax.grad(mixed64, argnums=(0, 1))(jnp.asarray(W, f64), jnp.asarray(V, f64))
    for a, b in zip(g(jnp.asarray(W, f64), jnp.asarray(V, f64)), want, strict=True):
        close(a, b)


def constructs(w):
    """jit, checkpoint, scan, cond, while_loop and vmap, each with a cast to bfloat16."""
    c = jnp.asarray(DATA[0, :3], f32)
    h = jax.jit(lambda a: jnp.sin(a.astype(bf16)).astype(f32))(w[0])
    h = jax.checkpoint(lambda a: jnp.exp(a.astype(bf16) * 0.5).astype(f32))(h)

    def step(carry, x):
        nxt = (carry * x.astype(bf16)).astype(f32) + c
        return nxt, jnp.sum(nxt)

    h, ys = jax.lax.scan(step, h, w[1:])
    h = jax.lax.cond(jnp.sum(h) > 0, lambda a: a.astype(bf16) ** 2, lambda a: -a.astype(bf16), h)
    h = h.astype(f32)
    _, h = jax.lax.while_loop(lambda s: s[0] < 3,
                              lambda s: (s[0] + 1, (s[1].astype(bf16) * 0.75).astype(f32)),
                              (0, h))  # fmt: skip
    rows = jax.vmap(lambda r: jnp.dot(r.astype(bf16), h.astype(bf16)).astype(f32))(w)
    return jnp.sum(rows) + jnp.sum(ys)


def constructs64(w):
    c = jnp.asarray(DATA[0, :3].astype(np.float32), f64)
    h = jnp.exp(jnp.sin(w[0]) * 0.5)
    ys = []
    for x in w[1:]:
        h = h * x + c
        ys.append(jnp.sum(h))
    h = h**2 if jnp.sum(h) > 0 else -h
    h = h * 0.75**3
    return jnp.sum(w @ h) + sum(ys)


def test_jit_checkpoint_scan_cond_while_and_vmap_are_raised():
    w = jnp.asarray(0.5 * RNG.standard_normal((4, 3)), f32)
    close(promote(constructs)(w), constructs64(jnp.asarray(w, f64)))
    low = {"bfloat16", "float32"}
    assert compute_dtypes(constructs, w) == low


def _softplus_bf16_rule():
    """A stable softplus whose rules compute in bfloat16: raised, they run in float64."""

    @jax.custom_jvp
    def sp(x):
        return jnp.logaddexp(x.astype(bf16), 0.0).astype(x.dtype)

    @sp.defjvp
    def sp_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return sp(x), (jax.nn.sigmoid(x.astype(bf16)).astype(x.dtype) * t)

    @jax.custom_vjp
    def tanh(x):
        return jnp.tanh(x.astype(bf16)).astype(x.dtype)

    def fwd(x):
        y = tanh(x)
        return y, x

    def bwd(x, g):
        return ((1 - jnp.tanh(x.astype(bf16)) ** 2).astype(x.dtype) * g,)

    tanh.defvjp(fwd, bwd)
    return sp, tanh


def test_custom_rules_are_raised_with_their_own_code():
    sp, tanh = _softplus_bf16_rule()

    def f(w):
        return jnp.sum(sp(tanh(jnp.asarray(DATA, f32) @ w)))

    def f64_(w):  # the data as f holds them: rounded to float32 when f was traced
        return jnp.sum(jax.nn.softplus(jnp.tanh(jnp.asarray(DATA.astype(np.float32), f64) @ w)))

    w = jnp.asarray(W)
    close(promote(f)(w), f64_(jnp.asarray(W, f64)))
    low = jax.grad(f)(w)
    raised = jax.grad(lambda a: promote(f, like=(w,))(a))(jnp.asarray(W, f64))
    close(raised, jax.grad(f64_)(jnp.asarray(W, f64)))  # the rules, in float64
    assert np.abs(np.asarray(low, np.float64) - np.asarray(raised)).max() > 1e-4  # bf16 rules
    # forward mode through the custom_jvp rule (a custom_vjp has none, in JAX itself)
    x = jnp.asarray(DATA.astype(np.float32), f64)
    t = jnp.ones_like(raised)
    _, tangent = jax.jvp(lambda a: promote(lambda b: jnp.sum(sp(x @ b)), like=(w,))(a),
                         (jnp.asarray(W, f64),), (t,))  # fmt: skip
    close(tangent, jnp.sum(jax.nn.sigmoid(x @ jnp.asarray(W, f64)) * (x @ t)))


def test_like_fixes_the_dtypes_the_program_is_read_at():
    def f(w):  # a program that looks at its own dtype
        return jnp.sum(w * jnp.finfo(w.dtype).eps)

    w = jnp.ones(3, bf16)
    at_bf16 = promote(f, like=(w,))(jnp.ones(3, f64))
    assert float(at_bf16) == pytest.approx(3 * float(jnp.finfo(bf16).eps), rel=1e-15)
    assert float(promote(f)(jnp.ones(3, f64))) == pytest.approx(3 * 2.0**-52, rel=1e-15)


def test_held_leaves_pass_through():
    def f(p):
        return jnp.sum(p["act"](p["w"].astype(bf16)).astype(f32) * p["n"])

    p = {"w": jnp.asarray(W), "act": jnp.tanh, "n": 3}
    close(promote(f)(p), 3 * np.sum(np.tanh(W.astype(np.float64))))


def _bitcast(w):
    return jnp.sum(jax.lax.bitcast_convert_type(w, jnp.int32).astype(f32))


def _callback(w):
    out = jax.ShapeDtypeStruct(w.shape, w.dtype)
    return jnp.sum(jax.pure_callback(np.sin, out, w, vmap_method="sequential"))


@pytest.mark.parametrize("f, name", [(_bitcast, "bitcast_convert_type"),
                                     (_callback, "pure_callback")])  # fmt: skip
def test_what_cannot_be_raised_is_named_with_its_line(f, name):
    with pytest.raises(CannotPromote, match=rf"cannot raise {name} \(at test_promote\.py:\d+\)"):
        promote(f)(jnp.asarray(W))


def test_a_callback_under_a_custom_rule_runs_at_its_own_dtype():
    @jax.custom_jvp
    def host_sin(x):
        out = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return jax.pure_callback(np.sin, out, x, vmap_method="sequential")

    host_sin.defjvp(lambda p, t: (host_sin(p[0]), jnp.cos(p[0]) * t[0]))
    x = jnp.asarray(V)
    out = promote(lambda a: jnp.sum(host_sin(a)))(x)
    close(out, np.sum(np.sin(V)), tol=1e-6)  # the primal in float32, as the kernel computes
    g = jax.grad(lambda a: promote(lambda b: jnp.sum(host_sin(b)), like=(x,))(a))
    close(g(jnp.asarray(V, f64)), np.cos(V.astype(np.float64)))  # the rule in float64


def test_with_float64_off_the_process_setting_is_left_as_it_was():
    code = """
import jax, jax.numpy as jnp
from functional_nn.program import promote
f = lambda x: jnp.sum(x.astype(jnp.bfloat16) ** 2)
out = promote(f)(jnp.asarray([1.0, 1.0 / 3.0]))
third = float(jnp.float32(1.0 / 3.0))  # float32: x64 is off in this process
assert out.dtype == jnp.float64 and float(out) == 1 + third**2, out
assert not jax.config.jax_enable_x64 and jnp.ones(2).dtype == jnp.float32
try:
    jax.jit(promote(f))(jnp.ones(2))
except ValueError as e:
    assert "jax.enable_x64" in str(e)
else:
    raise AssertionError("traced with x64 off: no error")
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
