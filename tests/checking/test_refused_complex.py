"""No reference may crash a check (issue 34, item 4): an ``f`` that traces at complex points
and then fails to run there (a Pallas kernel in interpret mode has no complex buffers; a host
callback that refuses complex arrays) gets central differences instead of the complex step,
and the report says so. The verdicts stay the engine's: a right rule passes, a backward 10%
off fails the leaf upstream of it and no other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import pallas as pl

from functional_nn import check_grad, check_jvp, check_vjp


def _tanh_kernel(x_ref, o_ref):
    o_ref[...] = jnp.tanh(x_ref[...])


def pallas_tanh(x):
    out = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return pl.pallas_call(_tanh_kernel, out_shape=out, interpret=True)(x)


def kernel_rule(scale):
    """tanh by a Pallas kernel under a custom_vjp whose backward is ``scale`` times right."""

    @jax.custom_vjp
    def act(x):
        return pallas_tanh(x)

    def fwd(x):
        y = pallas_tanh(x)
        return y, y

    def bwd(y, g):
        return (scale * g * (1 - y * y),)

    act.defvjp(fwd, bwd)
    return act


X = np.random.default_rng(0).standard_normal((3, 4))


def model(act, dtype):
    x = jnp.asarray(X, dtype)

    def f(p):  # w1 feeds the kernel, w2 comes after it
        return jnp.sum(jnp.sin(act(x @ p["w1"]) @ p["w2"]))

    rng = np.random.default_rng(1)
    params = {
        "w1": jnp.asarray(0.5 * rng.standard_normal((4, 5)), dtype),
        "w2": jnp.asarray(0.5 * rng.standard_normal((5, 2)), dtype),
    }
    return f, params


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_pallas_kernel_under_a_custom_vjp_is_checked_not_crashed(dtype):
    f, params = model(kernel_rule(1.0), dtype)
    report = check_grad(f, params)
    assert report.ok, report
    # the kernel sees complex input only when w1 moves: w2, after it, keeps the complex step
    assert "complex step refused by f (NotImplementedError" in report.description
    assert "at ['w1']: central differences there instead" in report.description
    assert report.reference == "complex_step + central"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_pallas_backward_10_percent_off_fails_the_leaf_it_feeds(dtype):
    f, params = model(kernel_rule(1.1), dtype)
    report = check_grad(f, params)
    failed = {r.leaf for r in report.rows if r.status == "fail"}
    assert failed == {"['w1']"}, report


def _host_sin(x):  # a host function that refuses complex arrays when it runs
    if np.iscomplexobj(x):
        raise TypeError("complex input is not supported by this host function")
    return np.sin(x)


def host_sin(x):
    out = jax.ShapeDtypeStruct(x.shape, x.dtype)
    return jax.pure_callback(_host_sin, out, x, vmap_method="sequential")


host_sin = jax.custom_jvp(host_sin)
host_sin.defjvp(lambda primals, tangents: (host_sin(primals[0]), jnp.cos(primals[0]) * tangents[0]))


def test_a_callback_that_refuses_complex_arrays_falls_back_in_vjp_and_jvp():
    x = jnp.asarray(X[0], jnp.float64)
    vjp = check_vjp(lambda v: host_sin(v) * v, x)
    jvp = check_jvp(lambda v: host_sin(v) * v, x)
    for report in (vjp, jvp):
        assert report.ok, report
        assert "complex step refused by f (" in report.description, report.description
