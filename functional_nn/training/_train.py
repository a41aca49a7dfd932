r"""Training: the lecture's gradient descent, optax's optimizers, and ``fit``.

The lecture's update (slides "Training a deep neural net", "Back-propagation: recap"):

.. math::

    \theta_t = \theta_{t-1} - \alpha \frac{\partial J_{\mathcal D}(\theta)}{\partial \theta_{t-1}}

is :func:`gradient_descent` (an ``optax.GradientTransformation``, equal to ``optax.sgd(alpha)``),
"or more complex gradient-based methods (Adam, etc)": any optax optimizer. :func:`fit`
minimizes :func:`~functional_nn.objective` (the lecture's summed J by default) with any
gradient method of the common signature, full batch by default.

How ``fit`` runs, in one paragraph: the data are put on the device once (split along samples
over a mesh's devices); the steps run on the device as a compiled ``lax.while_loop``,
``chunk_size`` steps a program call, which stops by itself at the first non-finite loss or
when early stopping says so; the carried state is donated from call to call; the host sends the
next chunk before it reads the previous chunk's losses, so the device never waits for it; the
compiled programs are kept in a cache keyed by what they compute (an equal, freshly built
optimizer reuses them), and one program serves every chunk, the last and shorter one included.

Nothing in the steps is spent on the failure path: no branch and no copy of the parameters per
step. Each chunk instead returns a copy of the state it started from (its anchor, one copy per
chunk); when step t's loss is not finite, the parameters of step t - 1 are recomputed from the
anchor that precedes it by the same program, bit for bit. Memory: the running state plus up to
three anchors (the chunks in flight and the last one read).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from functional_nn._util._devices import (
    auto_mesh,
    check_divisible,
    global_replicated,
    global_samples,
    replicated,
    sample_sharding,
)
from functional_nn._util._validation import check_array, check_int, check_key, check_real
from functional_nn.lecture._cost import prepare
from functional_nn.lecture._gradients import backprop
from functional_nn.lecture._network import Network, Params
from functional_nn.training._loop import (
    NON_FINITE,
    REASONS,
    RUNNING,
    Config,
    Data,
    cached_programs,
)


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
    alpha = check_real(alpha, "alpha", "gradient_descent")  # NumPy and JAX scalars welcome

    def init(params):
        return optax.EmptyState()

    def update(grads, state, params=None):
        return jax.tree_util.tree_map(lambda g: -alpha * g, grads), state

    return optax.GradientTransformation(init, update)


class History(NamedTuple):
    """What :func:`fit` saw, and why it stopped.

    Attributes:
        loss: the objective minimized (J plus the weight penalty) at every step run, before
            that step's update: shape ``(steps,)``. Every entry is finite: a non-finite loss
            stops ``fit`` and is not recorded.
        val_loss: J on the validation set (no penalty) at the same steps, or ``None``.
        best_step: with ``patience``, the step whose parameters were returned (the lowest
            validation loss; ``steps`` when the final parameters, never validated during the
            run, turned out lower), else ``None``.
        steps: the number of steps run, each with a finite loss.
        seconds: wall time of the loop, compile included.
        stop_reason: why ``fit`` stopped: ``"steps"`` (all the steps asked for),
            ``"early_stopping"`` (``patience`` steps without a better validation loss),
            ``"non_finite"`` (a step's training loss was NaN or infinite) or ``"interrupted"``
            (a ``KeyboardInterrupt``, from the user or the callback).
        non_finite_step: the step whose training loss was not finite (``== steps``), else
            ``None``.
    """

    loss: np.ndarray
    val_loss: np.ndarray | None
    best_step: int | None
    steps: int
    seconds: float
    stop_reason: str = "steps"
    non_finite_step: int | None = None


# -- fit -------------------------------------------------------------------------------------------


def _check_fit_args(optimizer, gradient, x, y, steps, batch_size, key, x_val, y_val, patience,
                    weight_decay, chunk_size, callback, mesh):  # fmt: skip
    """Each argument's rule; the arrays' shapes and values are checked by ``prepare``."""
    where = "fit"
    if isinstance(optimizer, (str, bytes)):
        raise TypeError(f"fit: optimizer must be an optax GradientTransformation such as "
                        f"optax.adam(1e-3); got the string {optimizer!r}")  # fmt: skip
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):  # fmt: skip
        name = getattr(optimizer, "__name__", "it")
        hint = (f"; {name} is not called yet: call it with its hyperparameters, e.g. "
                f"optax.adam(1e-3)" if callable(optimizer) else "")  # fmt: skip
        raise TypeError(f"fit: optimizer must be an optax GradientTransformation (with init and "
                        f"update) such as optax.adam(1e-3); got {optimizer!r} "
                        f"({type(optimizer).__name__}){hint}")  # fmt: skip
    if isinstance(gradient, (str, bytes)) or not callable(gradient):
        raise TypeError(f"fit: gradient must be a gradient method, a function "
                        f"(net, loss, params, x, y, reduction) -> (J, grads) such as "
                        f"fnn.backprop or fnn.autodiff; got {gradient!r} "
                        f"({type(gradient).__name__})")  # fmt: skip
    if callback is not None and not callable(callback):
        raise TypeError(f"fit: callback must be a function (steps_done, last_loss); got "
                        f"{callback!r}")  # fmt: skip
    steps = check_int(steps, "steps", where)
    chunk_size = check_int(chunk_size, "chunk_size", where)
    weight_decay = check_real(weight_decay, "weight_decay", where, 0.0, low_open=False)
    for name, a in (("x", x), ("x_val", x_val)):
        if a is not None and (jnp.ndim(a) != 2 or jnp.shape(a)[0] == 0):
            rule = "a batch (N, D) with N >= 1 samples"
            raise ValueError(f"fit: {name} must be {rule}; got shape {jnp.shape(a)}")
    N = jnp.shape(x)[0]
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", where)
        if batch_size > N:
            raise ValueError(f"fit: batch_size must be an int in 1..N={N}; got {batch_size!r}")
        if key is None:
            raise ValueError("fit: minibatches need a key to shuffle with (key=jax.random.key(0))")
    if key is not None:
        check_key(key, "key", where)
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"fit: mesh must be a jax.sharding.Mesh such as "
                        f"fnn.data_mesh(); got {mesh!r:.60}")  # fmt: skip
    if (x_val is None) != (y_val is None):
        raise ValueError("fit: give both x_val and y_val, or neither")
    if patience is not None:
        if x_val is None:
            raise ValueError("fit: early stopping (patience) needs x_val and y_val")
        patience = check_int(patience, "patience", where)
    return steps, batch_size, patience, weight_decay, chunk_size


_DEFAULT_OPTIMIZER = gradient_descent(1e-3)


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
        net, loss, params: the network, its loss and the starting parameters (never modified).
        x, y: the training set, ``(N, D)`` with ``N >= 1``, and the shape of ``y_hat``; NumPy or
            JAX arrays, put on the device once. Their values (finite, targets in range) are
            checked at every call, where they live (no copy to the host).
        optimizer: any optax ``GradientTransformation``, built: ``optax.adam(1e-3)``, not
            ``optax.adam``; default :func:`gradient_descent` (1e-3), the lecture's.
        steps: optimizer steps to take (an int >= 1).
        batch_size: ``None`` for full batch (the lecture's); else each epoch draws one
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
            ``patience`` steps (checked at every step, on the device), and return the
            parameters of the best validation step.
        weight_decay: :math:`\lambda \ge 0` of the L2 penalty on the weights (the lecture's
            "weight penalty"); biases are not penalized.
        chunk_size: steps per call of the compiled loop; the host is reached between chunks.
            One program serves every chunk, the last one too when ``steps`` is not a multiple.
        callback: ``callback(steps_done, last_loss)``, called on the host after each chunk
            (a progress bar). It runs one chunk late: the next chunk is already on the device.
            A ``KeyboardInterrupt`` it raises stops training as Ctrl-C does; any other
            exception propagates at once.
        mesh: data parallelism: a ``jax.sharding.Mesh`` (e.g. ``parallel.data_mesh()``).
            x, y, x_val and y_val are split along their samples over the mesh's devices (each
            device holds N / n rows; never replicated), every batch is split the same way,
            parameters and optimizer state are replicated, and XLA inserts the reduction of
            the gradient. N, the validation set's size and the batch size must each divide by
            the number of devices n: otherwise a ``ValueError`` says so (trim the set to a
            multiple of n; nothing is padded or dropped silently).

    Returns:
        ``(params, history)``, ``history.stop_reason`` saying why it stopped:

        - ``"steps"``: all steps ran; the final parameters.
        - ``"early_stopping"``: ``patience`` steps without a lower validation loss.
        - ``"non_finite"``: step ``history.non_finite_step`` had a NaN or infinite training
          loss; its update was not applied, and the parameters returned are the last ones
          known to give a finite loss: those at which ``history.loss[-1]`` was evaluated
          (the starting parameters when step 0 failed).
        - ``"interrupted"``: a ``KeyboardInterrupt`` (Ctrl-C, or raised by the callback)
          between chunks; the chunk already sent to the device finishes, and the parameters
          and history of that last completed step are returned.

        With ``patience``, the parameters returned are always those of ``history.best_step``,
        whatever the reason. ``history.loss`` holds exactly the steps the returned history
        counts (reading losses one chunk late changes nothing: the device stops itself).
    """
    optimizer = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
    for name, a in (("x", x), ("y", y), ("x_val", x_val), ("y_val", y_val)):
        if a is not None:  # arrays only: a list is refused here as by every gradient method
            check_array(a, name, "fit")
    steps, batch_size, patience, weight_decay, chunk_size = _check_fit_args(
        optimizer, gradient, x, y, steps, batch_size, key, x_val, y_val, patience, weight_decay,
        chunk_size, callback, mesh,
    )  # fmt: skip
    loss_name = loss
    loss = prepare(net, loss_name, params, x, y, reduction, "fit")[0]  # values read in place
    if x_val is not None:
        prepare(net, loss_name, params, x_val, y_val, reduction, "fit (validation)")

    # the data go to the device once: split along samples over a mesh, else where JAX puts them
    if mesh is not None:
        mesh = auto_mesh(mesh)
        n = mesh.size
        N = x.shape[0]
        check_divisible(N, mesh, "N (the training samples)", "fit",
                        f"x[:{N - N % n}], y[:{N - N % n}]")  # fmt: skip
        if batch_size is not None:
            check_divisible(batch_size, mesh, "the batch size", "fit",
                            f"batch_size={batch_size - batch_size % n or n}")  # fmt: skip
        if x_val is not None:
            M = x_val.shape[0]
            check_divisible(M, mesh, "the validation set's size", "fit",
                            f"x_val[:{M - M % n}], y_val[:{M - M % n}]")  # fmt: skip
        samples, everywhere = sample_sharding(mesh), replicated(mesh)
    else:
        samples = everywhere = None
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    x, y, x_val, y_val = (global_samples(a, samples, name, "fit") for a, name in
                          ((x, "x"), (y, "y"), (x_val, "x_val"), (y_val, "y_val")))  # fmt: skip
    numbers = (
        jax.random.key(0) if key is None else key,
        np.int32(steps),
        np.asarray(weight_decay, dtype),
        np.int32(patience or 0),
    )
    numbers = global_replicated(numbers, everywhere, "the key, steps, weight_decay or patience",
                                "fit")  # fmt: skip
    data = Data(x, y, x_val, y_val, *numbers)
    params = global_replicated(params, everywhere, "params", "fit")

    config = Config(net, loss, optimizer, gradient, reduction, batch_size, weight_decay > 0,
                     x_val is not None, patience is not None, chunk_size, mesh)  # fmt: skip
    programs = cached_programs(config, params)

    start = time.perf_counter()
    losses, vals, done, status = [], [], 0, RUNNING
    sent, unread = 0, collections.deque()  # chunks sent to the device, not read yet: (anchor, out)
    last_read = failed = None  # (anchor, start step) of the last chunk read; of the failed one

    def read():
        """Take the oldest chunk's losses to the host (the loop's only device-to-host copy)."""
        nonlocal done, status, last_read, failed
        anchor, out = unread.popleft()
        J, val, stats = jax.device_get(out)
        t, status = int(stats[0]), int(stats[1])
        new, first = t - done, done
        losses.append(J[:new])
        vals.append(val[:new])
        done = t
        if status == NON_FINITE and failed is None:  # the chunk that holds step t - 1
            failed = (anchor, first) if t > first or t == 0 else last_read
        last_read = (anchor, first)
        return new

    state, interrupted = programs.init(params, data), False
    try:
        while True:
            if status == RUNNING and sent < steps:  # send the next chunk before reading
                state, anchor, out = programs.run(state, data)
                unread.append((anchor, out))
                sent += chunk_size
            if not unread:
                break
            if (len(unread) > 1 or status != RUNNING or sent >= steps) and read() and callback:
                callback(done, float(losses[-1][-1]))
    except KeyboardInterrupt:
        interrupted = True
        while unread:  # the chunks already sent finish; their steps count
            read()
    if patience is not None:
        final, best_step = programs.finish(state, data)
    elif status == NON_FINITE:  # the parameters of step done - 1, recomputed from an anchor
        anchor, first = failed
        end = global_replicated(np.int32(max(done - 1, 0)), everywhere, "the last step", "fit")
        final = programs.run(anchor, data._replace(steps=end))[0].params
    else:
        final = state.params
    final = jax.block_until_ready(final)
    seconds = time.perf_counter() - start
    history = History(
        loss=np.concatenate(losses) if losses else np.zeros(0, dtype),
        val_loss=(np.concatenate(vals) if vals else np.zeros(0, dtype)) if x_val is not None
        else None,
        best_step=int(best_step) if patience is not None else None,
        steps=done,
        seconds=seconds,
        stop_reason="interrupted" if interrupted and status == RUNNING else REASONS[status],
        non_finite_step=done if status == NON_FINITE else None,
    )  # fmt: skip
    return final, history
