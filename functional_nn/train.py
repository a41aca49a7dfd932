r"""Training: the lecture's gradient descent, optax's optimizers, and ``fit``.

The lecture's update (slides "Training a deep neural net", "Back-propagation: recap"):

.. math::

    \theta_t = \theta_{t-1} - \alpha \frac{\partial J_{\mathcal D}(\theta)}{\partial \theta_{t-1}}

is :func:`gradient_descent` (an ``optax.GradientTransformation``, equal to ``optax.sgd(alpha)``),
"or more complex gradient-based methods (Adam, etc)": any optax optimizer. :func:`fit`
minimizes :func:`~functional_nn.objective` (the lecture's summed J by default) with any
gradient method of the common signature, full batch by default, compiled as a
:func:`jax.lax.scan` over steps, ``chunk_size`` steps at a time: the host is reached only
between chunks, where a ``callback`` can report progress.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from functional_nn.backprop import backprop, objective, prepare
from functional_nn.network import Layer, Network, Params
from functional_nn.parallel import auto_mesh, check_divisible, replicated, sample_sharding

__all__ = ["History", "fit", "gradient_descent", "make_step", "weight_penalty"]


def gradient_descent(alpha: float) -> optax.GradientTransformation:
    r"""The lecture's update, :math:`\theta_t = \theta_{t-1} - \alpha\, \partial J/\partial \theta`.

    Args:
        alpha: the learning rate :math:`\alpha > 0`.

    Returns:
        an ``optax.GradientTransformation`` with no state: ``update(g) = -alpha g``.

    >>> import jax.numpy as jnp, optax
    >>> opt = gradient_descent(0.1)
    >>> updates, _ = opt.update(jnp.array([1.0, -2.0]), opt.init(jnp.zeros(2)))
    >>> optax.apply_updates(jnp.zeros(2), updates).tolist()
    [-0.1, 0.2]
    """
    if not (isinstance(alpha, (int, float)) and alpha > 0 and np.isfinite(alpha)):
        raise ValueError(f"gradient_descent: alpha must be a positive finite number; got {alpha!r}")

    def init(params):
        return optax.EmptyState()

    def update(grads, state, params=None):
        return jax.tree_util.tree_map(lambda g: -alpha * g, grads), state

    return optax.GradientTransformation(init, update)


def weight_penalty(params: Params, weight_decay: float) -> jax.Array:
    r"""The L2 weight penalty :math:`\frac{\lambda}{2} \sum_l \lVert W^{(l)} \rVert_F^2`
    (weights only, not biases); its gradient is :math:`\lambda W^{(l)}`."""
    return 0.5 * weight_decay * sum(jnp.sum(W * W) for W, _ in params)


class History(NamedTuple):
    """What :func:`fit` saw.

    Attributes:
        loss: the objective minimized (J plus the weight penalty) at every step, before that
            step's update: shape ``(steps_run,)``.
        val_loss: J on the validation set (no penalty) at every step, or ``None``.
        best_step: the step whose parameters were returned when early stopping ran (the
            lowest validation loss), else ``None``.
        steps: the number of steps run (fewer than asked when early stopping stopped).
        seconds: wall time of the loop, compile included.
    """

    loss: np.ndarray
    val_loss: np.ndarray | None
    best_step: int | None
    steps: int
    seconds: float


class _Carry(NamedTuple):
    """The state a step carries: the parameters, the optimizer's state, and the best
    validation point so far."""

    params: Any
    opt_state: Any
    best_params: Any
    best_val: jax.Array
    best_step: jax.Array


def _check_fit_args(net, x, y, steps, batch_size, key, x_val, y_val, patience, weight_decay,
                    chunk_size):  # fmt: skip
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"fit: steps must be an int >= 1; got {steps!r}")
    N = jnp.shape(x)[0] if jnp.ndim(x) == 2 else None
    if N is None:
        raise ValueError(f"fit: x must be a batch (N, D); got shape {jnp.shape(x)}")
    if batch_size is not None:
        if not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= N:
            raise ValueError(f"fit: batch_size must be an int in 1..N={N}; got {batch_size!r}")
        if key is None:
            raise ValueError("fit: minibatches need a key to shuffle with (key=jax.random.key(0))")
    if (x_val is None) != (y_val is None):
        raise ValueError("fit: give both x_val and y_val, or neither")
    if patience is not None:
        if x_val is None:
            raise ValueError("fit: early stopping (patience) needs x_val and y_val")
        if not isinstance(patience, (int, np.integer)) or patience < 1:
            raise ValueError(f"fit: patience must be an int >= 1; got {patience!r}")
    if not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"fit: weight_decay must be >= 0; got {weight_decay!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"fit: chunk_size must be an int >= 1; got {chunk_size!r}")


_DEFAULT_OPTIMIZER = gradient_descent(1e-3)


def make_step(net, loss, optimizer, gradient, reduction, batch_size, weight_decay, validate,
              mesh=None):  # fmt: skip
    """One optimizer step as a pure function ``step(carry, t, data) -> (carry, (J, val))``,
    ``data = (x, y, x_val, y_val, key)``: what :func:`fit` scans over. With a ``mesh``, each
    batch is constrained to be split along its samples over the mesh's devices."""
    val_objective = objective(net, loss, reduction) if validate else None

    def batch(t, x, y, key):
        if batch_size is None:
            return x, y
        N = x.shape[0]
        per_epoch = N // batch_size
        epoch, b = t // per_epoch, t % per_epoch
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), N)
        idx = jax.lax.dynamic_slice_in_dim(perm, b * batch_size, batch_size)
        return x[idx], y[idx]

    def step(carry: _Carry, t, data):
        x, y, x_val, y_val, key = data
        xb, yb = batch(t, x, y, key)
        if mesh is not None:  # data parallel: XLA reduces the gradient over the devices
            xb = jax.lax.with_sharding_constraint(xb, sample_sharding(mesh))
            yb = jax.lax.with_sharding_constraint(yb, sample_sharding(mesh))
        J, grads = gradient(net, loss, carry.params, xb, yb, reduction)
        if weight_decay:
            J = J + weight_penalty(carry.params, weight_decay)
            grads = tuple(Layer(g.W + weight_decay * p.W, g.b)
                          for g, p in zip(grads, carry.params, strict=True))  # fmt: skip
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        new_params = optax.apply_updates(carry.params, updates)
        val = jnp.zeros((), J.dtype)
        best = (carry.best_params, carry.best_val, carry.best_step)
        if val_objective is not None:
            val = val_objective(carry.params, x_val, y_val)  # of the params before this update
            better = val < carry.best_val
            best = (
                jax.tree_util.tree_map(
                    lambda a, b: jnp.where(better, a, b), carry.params, carry.best_params
                ),
                jnp.where(better, val, carry.best_val),
                jnp.where(better, t, carry.best_step),
            )
        return _Carry(new_params, opt_state, *best), (J, val)

    return step


@functools.lru_cache(maxsize=64)
def _compiled_run(net, loss, optimizer, gradient, reduction, batch_size, weight_decay, validate,
                  mesh):  # fmt: skip
    """The jitted scan over a chunk of steps, compiled once per configuration (the data are
    arguments), so that fitting again does not compile again."""
    step = make_step(net, loss, optimizer, gradient, reduction, batch_size, weight_decay,
                     validate, mesh)  # fmt: skip

    @jax.jit
    def run(carry, ts, data):
        return jax.lax.scan(lambda c, t: step(c, t, data), carry, ts)

    return run


def fit(
    net: Network,
    loss,
    params: Params,
    x,
    y,
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 1000,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    gradient: Callable = backprop,
    reduction: str = "sum",
    x_val=None,
    y_val=None,
    patience: int | None = None,
    weight_decay: float = 0.0,
    *,
    chunk_size: int = 100,
    callback: Callable[[int, float], None] | None = None,
    mesh: Mesh | None = None,
) -> tuple[Params, History]:
    r"""Train ``params`` by minimizing :math:`J(\theta) + \frac{\lambda}{2}\sum_l \lVert
    W^{(l)} \rVert^2` with ``optimizer``.

    Args:
        net, loss, params: the network, its loss and the starting parameters.
        x, y: the training set, ``(N, D)`` and the shape of ``y_hat``.
        optimizer: any optax ``GradientTransformation``; default
            :func:`gradient_descent` (1e-3), the lecture's.
        steps: optimizer steps to take.
        batch_size: ``None`` for full batch (the lecture's); else each epoch draws a fresh
            permutation of the N samples (from ``key``) and takes ``N // batch_size``
            minibatches of it. When ``batch_size`` does not divide N, the ``N mod
            batch_size`` samples left over differ from epoch to epoch; none is dropped for good.
        key: PRNG key for the shuffles (needed with ``batch_size``).
        gradient: any gradient method ``(net, loss, params, x, y, reduction) -> (J, grads)``:
            :func:`~functional_nn.backprop` (default), ``autodiff``, ``jacobian_chain``, or
            finite differences on a tiny network.
        reduction: ``"sum"`` (the lecture's J) or ``"mean"``, over each batch.
        x_val, y_val: a validation set; its loss (no penalty) is recorded at every step.
        patience: early stopping: stop once the validation loss has not improved for
            ``patience`` steps, and return the parameters of the best validation step. The
            check runs between chunks, so up to ``chunk_size - 1`` more steps may run; the
            best parameters are the ones returned either way.
        weight_decay: :math:`\lambda \ge 0` of the L2 penalty on the weights (the lecture's
            "weight penalty"); biases are not penalized.
        chunk_size: steps per compiled ``lax.scan``; the host is reached between chunks.
        callback: ``callback(steps_done, last_loss)``, called between chunks (a progress bar).
        mesh: data parallelism: a ``jax.sharding.Mesh`` (e.g. ``parallel.data_mesh()``);
            every batch is split along its samples over the mesh's devices, parameters and
            optimizer state are replicated, and XLA inserts the reduction of the gradient.
            The batch size (N when full batch) must divide by the number of devices.

    Returns:
        ``(params, history)``: the trained (or best, with early stopping) parameters and a
        :class:`History`.
    """
    _check_fit_args(net, x, y, steps, batch_size, key, x_val, y_val, patience, weight_decay,
                    chunk_size)  # fmt: skip
    prepare(net, loss, params, x, y, reduction, "fit")
    if x_val is not None:
        prepare(net, loss, params, x_val, y_val, reduction, "fit (validation)")
    optimizer = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
    N = x.shape[0]
    val_objective = objective(net, loss, reduction) if x_val is not None else None

    if mesh is not None:
        mesh = auto_mesh(mesh)
        check_divisible(N if batch_size is None else int(batch_size), mesh,
                        "the batch size" if batch_size else "N (full batch)", "fit")  # fmt: skip
        rep_ = replicated(mesh)
        params, x, y = jax.device_put((params, x, y), rep_)
        if x_val is not None:
            x_val, y_val = jax.device_put((x_val, y_val), rep_)
    config = (net, loss, optimizer, gradient, reduction, batch_size, float(weight_decay),
              x_val is not None, mesh)  # fmt: skip
    try:
        run = _compiled_run(*config)
    except TypeError:  # an unhashable loss, optimizer or method: compile without the cache
        run = _compiled_run.__wrapped__(*config)
    key = jax.random.key(0) if key is None else key
    data = (x, y, x_val, y_val, key)

    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    carry = _Carry(params, optimizer.init(params), params, jnp.asarray(jnp.inf, dtype),
                   jnp.asarray(0, jnp.int32))  # fmt: skip
    losses, vals = [], []
    done = 0
    start = time.perf_counter()
    while done < steps:
        n = min(chunk_size, steps - done)
        carry, (J, val) = run(carry, jnp.arange(done, done + n, dtype=jnp.int32), data)
        losses.append(np.asarray(J))  # host transfers happen here, between chunks, never inside
        vals.append(np.asarray(val))
        done += n
        if callback is not None:
            callback(done, float(losses[-1][-1]))
        if patience is not None and done - 1 - int(carry.best_step) >= patience:
            break
    seconds = time.perf_counter() - start
    loss_history = np.concatenate(losses)
    if patience is not None:
        final, best_step = carry.best_params, int(carry.best_step)
        # the last step's update is never validated: compare it too before returning
        last_val = float(val_objective(carry.params, x_val, y_val))
        if last_val < float(carry.best_val):
            final, best_step = carry.params, done
    else:
        final, best_step = carry.params, None
    history = History(
        loss_history,
        np.concatenate(vals) if x_val is not None else None,
        best_step,
        done,
        seconds,
    )
    return final, history
