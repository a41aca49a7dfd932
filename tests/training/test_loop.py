"""fit's compiled loop (functional_nn/training/_loop.py): its batches against a Python loop of
jitted steps written here, its program cache keyed by what an optimizer computes, and the
overlap of sending a chunk and reading the last one."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import functional_nn as fnn
import functional_nn.training._loop as loop
from functional_nn import Layer, Network, fit, gradient_descent, load_dataset


def reference_step(net, loss, optimizer, batch_size):
    """One optimizer step as fit documents it, for a Python loop of jitted steps: step ``t``
    takes batch ``t % per_epoch`` of its epoch's permutation,
    ``jax.random.permutation(jax.random.fold_in(key, epoch), N)``, here drawn again at every
    step; J is the batch's objective, summed."""

    def step(params, opt_state, t, x, y, key):
        per_epoch = x.shape[0] // batch_size
        perm = jax.random.permutation(jax.random.fold_in(key, t // per_epoch), x.shape[0])
        idx = jax.lax.dynamic_slice_in_dim(perm, (t % per_epoch) * batch_size, batch_size)
        J, grads = fnn.backprop(net, loss, params, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return J, optax.apply_updates(params, updates), opt_state

    return jax.jit(step)


def test_the_permutation_drawn_once_per_epoch_gives_the_batches_of_each_step(key):
    ds = load_dataset("moons")  # 320 samples, 64 a batch: 5 steps an epoch
    net = Network((2, 4, 1))
    params, opt = net.init(key), optax.adam(1e-2)
    _, h = fit(net, "bce", params, ds.x_train, ds.y_train, opt, 13, 64, jax.random.key(1),
               chunk_size=4)  # fmt: skip
    step = reference_step(net, "bce", opt, 64)
    opt_state, losses = opt.init(params), []
    for t in range(13):  # crosses two epoch boundaries, and chunks of 4 steps
        J, params, opt_state = step(params, opt_state, t, ds.x_train, ds.y_train,
                                    jax.random.key(1))  # fmt: skip
        losses.append(float(J))
    np.testing.assert_array_equal(h.loss, losses)


def test_optimizer_keys_tell_equal_optimizers_from_different_ones():
    params = (Layer(jnp.zeros((3, 2)), jnp.zeros(3)),)
    key = functools.partial(loop.optimizer_key, params=params)
    assert key(optax.adam(1e-3)) == key(optax.adam(1e-3))
    assert key(gradient_descent(0.1)) == key(gradient_descent(0.1))
    assert key(optax.adam(1e-3)) != key(optax.adam(1.0000001e-3))  # float64 here
    assert key(optax.adam(jnp.array(1e-3))) == key(optax.adam(jnp.array(1e-3)))
    assert key(optax.adam(jnp.array(1e-3))) != key(optax.adam(jnp.array(2e-3)))
    assert key(optax.adam(1e-3)) != key(optax.sgd(1e-3))
    schedule = optax.exponential_decay(1e-3, 100, 0.5)
    assert key(optax.adam(schedule)) == key(optax.adam(optax.exponential_decay(1e-3, 100, 0.5)))
    assert key(optax.adam(schedule)) != key(optax.adam(optax.exponential_decay(1e-3, 100, 0.6)))
    # the path that traces: an optimizer closing over something it cannot read by value
    everything = lambda self, p: jax.tree_util.tree_map(lambda _: True, p)  # noqa: E731
    mask = type("Mask", (), {"__hash__": None, "__call__": everything})  # unhashable
    masked = lambda lr: optax.masked(optax.adam(lr), mask())  # noqa: E731
    assert loop.closure_key(masked(1e-3)) is None and key(masked(1e-3))[0] == "jaxpr"
    assert key(masked(1e-3)) == key(masked(1e-3)) != key(masked(2e-3))


def test_the_next_chunk_is_sent_before_the_last_one_is_read_and_the_state_donated(monkeypatch, key):
    events, programs, device_get = [], loop.programs, jax.device_get

    def spy(config):
        p = programs(config)

        def run(state, data):
            out = p.run(state, data)
            events.append("run" if state.params[0].W.is_deleted() else "run, not donated")
            return out

        return p._replace(run=run)

    def read(x):
        events.append("read")
        return device_get(x)

    monkeypatch.setattr(loop, "programs", spy)
    monkeypatch.setattr(loop, "_PROGRAMS", collections.OrderedDict())
    monkeypatch.setattr(loop.jax, "device_get", read)
    net = Network((2, 3, 1))
    _, h = fit(net, "bce", net.init(key), jnp.ones((8, 2)), jnp.ones((8, 1)), steps=130,
               chunk_size=50)  # fmt: skip
    assert h.steps == 130
    assert events == ["run", "run", "read", "run", "read", "read"]
