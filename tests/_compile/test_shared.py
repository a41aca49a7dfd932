"""Programs shared by structure (functional_nn._compile._shared): a function made afresh that
computes what an earlier one computed compiles nothing and returns its own values; functions
that print alike but compute apart never share."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_nn as fnn
from functional_nn._compile import shared_jit


@pytest.fixture
def compilations():
    events, active = [], [True]

    def listen(event, duration, **kwargs):
        if active[0] and event == "/jax/core/compile/backend_compile_duration":
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield events
    active[0] = False


def _loss(x, y):
    return lambda p: jnp.sum((jnp.tanh(x @ p["w"]) - y) ** 2) + jnp.sum(p["b"] ** 2)


def _data(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((7, 5)), rng.standard_normal((7, 2))
    return {"w": jnp.asarray(rng.standard_normal((5, 2))), "b": jnp.ones(2)}, x, y


def test_a_fresh_closure_at_other_data_compiles_nothing_and_gives_its_own_values(compilations):
    p0, x0, y0 = _data(0)
    shared_jit(jax.grad(_loss(x0, y0)))(p0)
    compilations.clear()
    p1, x1, y1 = _data(1)  # other data (constants of the program), other parameters
    got = shared_jit(jax.grad(_loss(x1, y1)))(p1)
    assert compilations == []
    want = jax.grad(_loss(x1, y1))(p1)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(p1)


def test_a_second_check_grad_of_a_fresh_closure_compiles_nothing(compilations):
    p0, x0, y0 = _data(2)
    assert fnn.check_grad(_loss(x0, y0), p0).ok
    compilations.clear()
    p1, x1, y1 = _data(3)
    assert fnn.check_grad(_loss(x1, y1), p1).ok
    assert compilations == []
    wrong = fnn.check_grad(_loss(x1, y1), p1, grad=lambda p: jax.tree_util.tree_map(
        lambda g: 1.01 * g, jax.grad(_loss(x1, y1))(p)), locate=False)  # fmt: skip
    assert {r.leaf for r in wrong.failures if r.method == "grad"} == {"['w']", "['b']"}


def test_programs_that_print_alike_but_compute_apart_never_share():
    """An inner jit's constant and a host callback: what printing does not show."""

    def with_const(c):
        inner = jax.jit(lambda w: w * jnp.asarray(c))
        return lambda w: jnp.sum(inner(w))

    def with_callback(c):
        out = jax.ShapeDtypeStruct((3,), jnp.float64)
        return lambda w: jnp.sum(jax.pure_callback(lambda v: np.asarray(v * c), out, w))

    w = jnp.arange(3.0)
    for make in (with_const, with_callback):
        two, three = shared_jit(make(np.full(3, 2.0))), shared_jit(make(np.full(3, 3.0)))
        assert float(two(w)) == 6.0 and float(three(w)) == 9.0


def test_python_scalars_and_weak_types_trace_apart():
    f = shared_jit(lambda a, b: a * b)
    assert f(2.0, jnp.ones(2, jnp.float32)).dtype == jnp.float32  # a weak scalar follows
    assert f(jnp.float64(2.0), jnp.ones(2, jnp.float32)).dtype == jnp.float64
