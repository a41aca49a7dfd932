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
import functools
import time
import types
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
from functional_nn.validation import check_array, check_int, check_key, check_real

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
    alpha = check_real(alpha, "alpha", "gradient_descent")  # NumPy and JAX scalars welcome

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


# -- one step --------------------------------------------------------------------------------------


def _update(net, loss, optimizer, gradient, reduction, penalized):
    """``update(params, opt_state, x, y, weight_decay) -> (J, params, opt_state)``: one
    optimizer step on one batch, the weight penalty added to J and to the weights' gradient."""

    def update(params, opt_state, xb, yb, weight_decay):
        J, grads = gradient(net, loss, params, xb, yb, reduction)
        if penalized:
            J = J + weight_penalty(params, weight_decay)
            grads = tuple(Layer(g.W + weight_decay * p.W, g.b)
                          for g, p in zip(grads, params, strict=True))  # fmt: skip
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return J, optax.apply_updates(params, updates), opt_state

    return update


def _epoch_permutation(key, epoch, N):
    """The order in which epoch ``epoch`` visits the N samples: one permutation per epoch."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), N)


def _constrain(mesh, *arrays):
    if mesh is None:
        return arrays
    return tuple(jax.lax.with_sharding_constraint(a, sample_sharding(mesh)) for a in arrays)


class _Carry(NamedTuple):
    """The state :func:`make_step` carries (the parameters, the optimizer's state, and the
    best validation point so far)."""

    params: Any
    opt_state: Any
    best_params: Any
    best_val: jax.Array
    best_step: jax.Array


def make_step(net, loss, optimizer, gradient, reduction, batch_size, weight_decay, validate,
              mesh=None):  # fmt: skip
    """One optimizer step as a pure function ``step(carry, t, data) -> (carry, (J, val))``,
    ``data = (x, y, x_val, y_val, key)``, ``carry`` a ``_Carry``: a reference for a Python loop
    of jitted steps. It takes the batches :func:`fit` takes (the permutation of step ``t``'s
    epoch, here drawn again at every step) and the same updates."""
    update = _update(net, loss, optimizer, gradient, reduction, bool(weight_decay))
    val_objective = objective(net, loss, reduction) if validate else None

    def step(carry: _Carry, t, data):
        x, y, x_val, y_val, key = data
        xb, yb = x, y
        if batch_size is not None:
            per_epoch = x.shape[0] // batch_size
            perm = _epoch_permutation(key, t // per_epoch, x.shape[0])
            idx = jax.lax.dynamic_slice_in_dim(perm, (t % per_epoch) * batch_size, batch_size)
            xb, yb = x[idx], y[idx]
        xb, yb = _constrain(mesh, xb, yb)
        J, new_params, opt_state = update(carry.params, carry.opt_state, xb, yb, weight_decay)
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


# -- the compiled programs of fit ------------------------------------------------------------------

_RUNNING, _NON_FINITE, _EARLY_STOPPING = 0, 1, 2
_REASONS = {_RUNNING: "steps", _NON_FINITE: "non_finite", _EARLY_STOPPING: "early_stopping"}


class _State(NamedTuple):
    """What the device carries from step to step and from chunk to chunk (donated)."""

    t: jax.Array  # steps done: the index of the next step
    status: jax.Array  # _RUNNING, or why the loop stopped
    params: Any
    opt_state: Any
    perm: Any  # this epoch's order of the samples (minibatches only), else None
    best: Any  # (params, val, step) of the lowest validation loss (patience only), else None


class _Data(NamedTuple):
    """Put on the device once per fit: the samples and the run's numbers."""

    x: jax.Array
    y: jax.Array
    x_val: Any
    y_val: Any
    key: jax.Array
    steps: jax.Array  # the loop stops at this step
    weight_decay: jax.Array
    patience: jax.Array


class _Config(NamedTuple):
    """Everything a program depends on besides shapes and dtypes: the program cache's key,
    with the optimizer replaced by :func:`_optimizer_key`."""

    net: Network
    loss: Any
    optimizer: Any
    gradient: Callable
    reduction: str
    batch_size: int | None
    penalized: bool
    validate: bool
    early_stopping: bool
    chunk_size: int
    mesh: Mesh | None


class _Programs(NamedTuple):
    init: Callable  # (params, data) -> _State
    run: Callable  # (state, data) -> (state, anchor, (losses, val_losses, stats)); donated
    finish: Callable  # (state, data) -> (params, best_step), with patience


def _programs(c: _Config) -> _Programs:
    """Compile-once programs of one configuration (jitted: shapes and dtypes are jit's own
    cache key)."""
    update = _update(c.net, c.loss, c.optimizer, c.gradient, c.reduction, c.penalized)
    val_objective = objective(c.net, c.loss, c.reduction) if c.validate else None
    B = c.batch_size

    def init(params, data):
        copy = lambda p: jax.tree_util.tree_map(jnp.copy, p)  # noqa: E731 (fresh buffers: donated)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
        return _State(
            t=jnp.zeros((), jnp.int32),
            status=jnp.full((), _RUNNING, jnp.int32),
            params=copy(params),
            opt_state=c.optimizer.init(params),
            perm=None if B is None else _epoch_permutation(data.key, 0, data.x.shape[0]),
            best=(copy(params), jnp.asarray(jnp.inf, dtype), jnp.zeros((), jnp.int32))
            if c.early_stopping
            else None,
        )

    def step(s: _State, data: _Data):
        t = s.t
        xb, yb, perm = data.x, data.y, s.perm
        if B is not None:
            N = data.x.shape[0]
            per_epoch = N // B
            epoch, b = t // per_epoch, t % per_epoch
            perm = jax.lax.cond(
                (b == 0) & (t > 0),
                lambda: _epoch_permutation(data.key, epoch, N).astype(s.perm.dtype),
                lambda: s.perm,
            )
            idx = jax.lax.dynamic_slice_in_dim(perm, b * B, B)
            xb, yb = data.x[idx], data.y[idx]
        xb, yb = _constrain(c.mesh, xb, yb)
        J, new_params, opt_state = update(s.params, s.opt_state, xb, yb, data.weight_decay)
        val = val_objective(s.params, data.x_val, data.y_val) if c.validate else jnp.zeros_like(J)
        # No branch and no copy of the parameters: on a non-finite loss the loop stops, t stays
        # at the failed step, and the host recomputes the parameters before it (see fit).
        finite = jnp.isfinite(J)
        best, status = s.best, jnp.where(finite, _RUNNING, _NON_FINITE)
        if c.early_stopping:
            b_params, b_val, b_step = s.best
            better = finite & (val < b_val)
            pick = lambda a, b: jnp.where(better, a, b)  # noqa: E731
            best = (jax.tree_util.tree_map(pick, s.params, b_params), pick(val, b_val),
                    pick(t, b_step))  # fmt: skip
            patience_over = finite & (t - best[2] >= data.patience)
            status = jnp.where(patience_over, _EARLY_STOPPING, status)
        state = _State(jnp.where(finite, t + 1, t), status.astype(jnp.int32), new_params,
                       opt_state, perm, best)  # fmt: skip
        return state, J, val

    def run(state: _State, data: _Data):
        anchor = jax.tree_util.tree_map(jnp.copy, state)  # the chunk's start, kept for a replay
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(state.params))
        buf = jnp.full((c.chunk_size,), jnp.nan, dtype)

        def going(carry):
            s, i, _, _ = carry
            return (i < c.chunk_size) & (s.t < data.steps) & (s.status == _RUNNING)

        def body(carry):
            s, i, losses, vals = carry
            s, J, val = step(s, data)
            return s, i + 1, losses.at[i].set(J.astype(dtype)), vals.at[i].set(val.astype(dtype))

        state, _, losses, vals = jax.lax.while_loop(going, body, (state, 0, buf, buf))
        best_step = state.best[2] if c.early_stopping else jnp.zeros((), jnp.int32)
        return state, anchor, (losses, vals, jnp.stack([state.t, state.status, best_step]))

    def finish(state: _State, data: _Data):
        """With patience: the best validated parameters, or the final ones when their (never
        computed) validation loss is lower."""
        b_params, b_val, b_step = state.best
        final_val = val_objective(state.params, data.x_val, data.y_val)
        final = (state.status != _NON_FINITE) & (final_val < b_val)
        params = jax.tree_util.tree_map(lambda a, b: jnp.where(final, a, b), state.params, b_params)
        return params, jnp.where(final, state.t, b_step)

    return _Programs(jax.jit(init), jax.jit(run, donate_argnums=0), jax.jit(finish))


# -- the program cache -----------------------------------------------------------------------------

_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_OPTIMIZER_KEYS: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 64
_CONST_LIMIT = 4096  # entries of an optimizer's closed-over arrays that go into its key


def _const_key(c):
    """A closed-over array of an optimizer, by value (small ones), else ``None``."""
    if np.size(c) > _CONST_LIMIT:
        return None
    a = np.asarray(c)  # an optimizer's hyperparameters: a few numbers
    return (a.dtype.str, a.shape, a.tobytes())


_VALUE_TYPES = (type(None), bool, int, float, complex, str, bytes)


class _EmptyCell:
    """Stands for a closure cell not filled yet."""


def _cell(c):
    try:
        return c.cell_contents
    except ValueError:  # an empty cell
        return _EmptyCell


def _closure_key(obj, depth: int = 0):
    """What a function built from closures computes, as a hashable value: its code, its module
    and, recursively, what it closes over (numbers by value, small arrays by their bytes, other
    objects by identity); ``None`` when that cannot be said (too deep, a large array).

    Two ``optax.adam(1e-3)`` are equal NamedTuples of closures over equal values, so their
    keys are equal; ``optax.adam(2e-3)`` differs in one closed-over number."""
    if depth > 16:
        return None
    sub = lambda o: _closure_key(o, depth + 1)  # noqa: E731
    if isinstance(obj, _VALUE_TYPES):
        return (type(obj), obj)
    if isinstance(obj, types.FunctionType):
        parts = (tuple(sub(_cell(c)) for c in obj.__closure__ or ()),
                 sub(obj.__defaults__), sub(obj.__kwdefaults__))  # fmt: skip
        if None in parts[0] or parts[1] is None or parts[2] is None:
            return None
        return ("function", obj.__code__, id(obj.__globals__), *parts)
    if isinstance(obj, functools.partial):
        parts = (sub(obj.func), sub(obj.args), sub(obj.keywords))
        return None if None in parts else ("partial", *parts)
    if isinstance(obj, (tuple, list)):
        items = tuple(sub(o) for o in obj)
        return None if None in items else (type(obj), items)
    if isinstance(obj, dict):
        items = tuple((k, sub(v)) for k, v in obj.items())
        return None if any(v is None for _, v in items) else (dict, items)
    if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
        return None if isinstance(obj, jax.core.Tracer) else _const_key(obj)
    try:
        hash(obj)
    except TypeError:
        return None
    return ("object", obj)  # by identity (the key keeps it alive): never wrongly shared


def _optimizer_key(optimizer, params):
    """What the optimizer computes, as a hashable key for the program cache.

    optax optimizers are NamedTuples of closures, so two calls of ``optax.adam(1e-3)`` are two
    unequal objects. First, :func:`_closure_key`: their code and closed-over values, which is
    equal for the two and differs for ``optax.adam(2e-3)`` (microseconds). Where that cannot be
    said, what it computes on parameters of these shapes: the jaxprs of ``init`` and
    ``update`` (a number closed over is a literal there, an array a constant compared by
    value), the structure of the state. An optimizer that cannot be traced on its own, or
    closes over large arrays, is keyed by itself (by identity). Keys of objects are memoized.
    """
    shapes = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), a.dtype), params)
    memo = (id(optimizer), jax.tree_util.tree_structure(shapes),
            tuple((s.shape, s.dtype) for s in jax.tree_util.tree_leaves(shapes)))  # fmt: skip
    if memo in _OPTIMIZER_KEYS:
        _OPTIMIZER_KEYS.move_to_end(memo)
        return _OPTIMIZER_KEYS[memo][1]
    closures = _closure_key(optimizer)
    if closures is not None:  # microseconds: no tracing
        return ("closures", closures)
    try:
        init, state = jax.make_jaxpr(optimizer.init, return_shape=True)(shapes)
        update, out = jax.make_jaxpr(optimizer.update, return_shape=True)(shapes, state, shapes)
        consts = tuple(_const_key(c) for c in (*init.consts, *update.consts))
        if any(k is None for k in consts):
            raise ValueError("large constants")
        key = ("jaxpr", str(init.jaxpr), str(update.jaxpr), jax.tree_util.tree_structure(state),
               jax.tree_util.tree_structure(out), consts)  # fmt: skip
    except Exception:  # noqa: BLE001 (anything else is keyed by identity, never wrongly shared)
        key = ("object", optimizer)
    _OPTIMIZER_KEYS[memo] = (optimizer, key)  # the object is kept alive: its id stays unique
    if len(_OPTIMIZER_KEYS) > _CACHE_SIZE:
        _OPTIMIZER_KEYS.popitem(last=False)
    return key


def _cached_programs(config: _Config, params) -> _Programs:
    """The programs of ``config``, compiled once for every equal configuration."""
    key = config._replace(optimizer=_optimizer_key(config.optimizer, params))
    try:
        hash(key)
    except TypeError:  # an unhashable loss or method: programs of their own
        return _programs(config)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = _programs(config)
        if len(_PROGRAMS) > _CACHE_SIZE:
            _PROGRAMS.popitem(last=False)
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]


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
                        f"functional_nn.parallel.data_mesh(); got {mesh!r:.60}")  # fmt: skip
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
            checked at every call, except those of large ``jax.Array`` objects (a million
            entries and more): immutable, they are checked once.
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
    x, y, x_val, y_val = jax.device_put((x, y, x_val, y_val), samples)
    numbers = (
        jax.random.key(0) if key is None else key,
        np.int32(steps),
        np.asarray(weight_decay, dtype),
        np.int32(patience or 0),
    )
    data = _Data(x, y, x_val, y_val, *jax.device_put(numbers, everywhere))
    params = jax.device_put(params, everywhere)

    config = _Config(net, loss, optimizer, gradient, reduction, batch_size, weight_decay > 0,
                     x_val is not None, patience is not None, chunk_size, mesh)  # fmt: skip
    programs = _cached_programs(config, params)

    start = time.perf_counter()
    losses, vals, done, status = [], [], 0, _RUNNING
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
        if status == _NON_FINITE and failed is None:  # the chunk that holds step t - 1
            failed = (anchor, first) if t > first or t == 0 else last_read
        last_read = (anchor, first)
        return new

    state, interrupted = programs.init(params, data), False
    try:
        while True:
            if status == _RUNNING and sent < steps:  # send the next chunk before reading
                state, anchor, out = programs.run(state, data)
                unread.append((anchor, out))
                sent += chunk_size
            if not unread:
                break
            if (len(unread) > 1 or status != _RUNNING or sent >= steps) and read() and callback:
                callback(done, float(losses[-1][-1]))
    except KeyboardInterrupt:
        interrupted = True
        while unread:  # the chunks already sent finish; their steps count
            read()
    if patience is not None:
        final, best_step = programs.finish(state, data)
    elif status == _NON_FINITE:  # the parameters of step done - 1, recomputed from an anchor
        anchor, first = failed
        end = jax.device_put(np.int32(max(done - 1, 0)), everywhere)
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
        stop_reason="interrupted" if interrupted and status == _RUNNING else _REASONS[status],
        non_finite_step=done if status == _NON_FINITE else None,
    )  # fmt: skip
    return final, history
