r"""The steps of :func:`~functional_nn.fit` and the compiled programs that run them.

One optimizer step on one batch (``_update``); the programs ``fit`` compiles once per
configuration (:func:`programs`: ``init``, ``run``, a ``lax.while_loop`` over a chunk of
steps that stops by itself at a non-finite loss or when early stopping says so, and
``finish``); and their cache, keyed by what the optimizer computes rather than by the
optimizer object (:func:`optimizer_key`), so that an equal, freshly built ``optax.adam(1e-3)``
reuses the programs. :func:`~functional_nn.fit` (``_train.py``) drives them.
"""

from __future__ import annotations

import collections
import functools
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from functional_nn._util._devices import sample_sharding
from functional_nn.lecture._cost import objective
from functional_nn.lecture._network import Layer, Network, Params


def weight_penalty(params: Params, weight_decay: float) -> jax.Array:
    r"""The L2 weight penalty :math:`\frac{\lambda}{2} \sum_l \lVert W^{(l)} \rVert_F^2`
    (weights only, not biases); its gradient is :math:`\lambda W^{(l)}`."""
    return 0.5 * weight_decay * sum(jnp.sum(W * W) for W, _ in params)


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


# -- the compiled programs of fit ------------------------------------------------------------------

RUNNING, NON_FINITE, EARLY_STOPPING = 0, 1, 2
REASONS = {RUNNING: "steps", NON_FINITE: "non_finite", EARLY_STOPPING: "early_stopping"}


class State(NamedTuple):
    """What the device carries from step to step and from chunk to chunk (donated)."""

    t: jax.Array  # steps done: the index of the next step
    status: jax.Array  # RUNNING, or why the loop stopped
    params: Any
    opt_state: Any
    perm: Any  # this epoch's order of the samples (minibatches only), else None
    best: Any  # (params, val, step) of the lowest validation loss (patience only), else None


class Data(NamedTuple):
    """Put on the device once per fit: the samples and the run's numbers."""

    x: jax.Array
    y: jax.Array
    x_val: Any
    y_val: Any
    key: jax.Array
    steps: jax.Array  # the loop stops at this step
    weight_decay: jax.Array
    patience: jax.Array


class Config(NamedTuple):
    """Everything a program depends on besides shapes and dtypes: the program cache's key,
    with the optimizer replaced by :func:`optimizer_key`."""

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


class Programs(NamedTuple):
    init: Callable  # (params, data) -> State
    run: Callable  # (state, data) -> (state, anchor, (losses, val_losses, stats)); donated
    finish: Callable  # (state, data) -> (params, best_step), with patience


def programs(c: Config) -> Programs:
    """Compile-once programs of one configuration (jitted: shapes and dtypes are jit's own
    cache key)."""
    update = _update(c.net, c.loss, c.optimizer, c.gradient, c.reduction, c.penalized)
    val_objective = objective(c.net, c.loss, c.reduction) if c.validate else None
    B = c.batch_size

    def init(params, data):
        copy = lambda p: jax.tree_util.tree_map(jnp.copy, p)  # noqa: E731 (fresh buffers: donated)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
        return State(
            t=jnp.zeros((), jnp.int32),
            status=jnp.full((), RUNNING, jnp.int32),
            params=copy(params),
            opt_state=c.optimizer.init(params),
            perm=None if B is None else _epoch_permutation(data.key, 0, data.x.shape[0]),
            best=(copy(params), jnp.asarray(jnp.inf, dtype), jnp.zeros((), jnp.int32))
            if c.early_stopping
            else None,
        )

    def step(s: State, data: Data):
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
        best, status = s.best, jnp.where(finite, RUNNING, NON_FINITE)
        if c.early_stopping:
            b_params, b_val, b_step = s.best
            better = finite & (val < b_val)
            pick = lambda a, b: jnp.where(better, a, b)  # noqa: E731
            best = (jax.tree_util.tree_map(pick, s.params, b_params), pick(val, b_val),
                    pick(t, b_step))  # fmt: skip
            patience_over = finite & (t - best[2] >= data.patience)
            status = jnp.where(patience_over, EARLY_STOPPING, status)
        state = State(jnp.where(finite, t + 1, t), status.astype(jnp.int32), new_params,
                       opt_state, perm, best)  # fmt: skip
        return state, J, val

    def run(state: State, data: Data):
        anchor = jax.tree_util.tree_map(jnp.copy, state)  # the chunk's start, kept for a replay
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(state.params))
        buf = jnp.full((c.chunk_size,), jnp.nan, dtype)

        def going(carry):
            s, i, _, _ = carry
            return (i < c.chunk_size) & (s.t < data.steps) & (s.status == RUNNING)

        def body(carry):
            s, i, losses, vals = carry
            s, J, val = step(s, data)
            return s, i + 1, losses.at[i].set(J.astype(dtype)), vals.at[i].set(val.astype(dtype))

        state, _, losses, vals = jax.lax.while_loop(going, body, (state, 0, buf, buf))
        best_step = state.best[2] if c.early_stopping else jnp.zeros((), jnp.int32)
        return state, anchor, (losses, vals, jnp.stack([state.t, state.status, best_step]))

    def finish(state: State, data: Data):
        """With patience: the best validated parameters, or the final ones when their (never
        computed) validation loss is lower."""
        b_params, b_val, b_step = state.best
        final_val = val_objective(state.params, data.x_val, data.y_val)
        final = (state.status != NON_FINITE) & (final_val < b_val)
        params = jax.tree_util.tree_map(lambda a, b: jnp.where(final, a, b), state.params, b_params)
        return params, jnp.where(final, state.t, b_step)

    return Programs(jax.jit(init), jax.jit(run, donate_argnums=0), jax.jit(finish))


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


def closure_key(obj, depth: int = 0):
    """What a function built from closures computes, as a hashable value: its code, its module
    and, recursively, what it closes over (numbers by value, small arrays by their bytes, other
    objects by identity); ``None`` when that cannot be said (too deep, a large array).

    Two ``optax.adam(1e-3)`` are equal NamedTuples of closures over equal values, so their
    keys are equal; ``optax.adam(2e-3)`` differs in one closed-over number."""
    if depth > 16:
        return None
    sub = lambda o: closure_key(o, depth + 1)  # noqa: E731
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


def optimizer_key(optimizer, params):
    """What the optimizer computes, as a hashable key for the program cache.

    optax optimizers are NamedTuples of closures, so two calls of ``optax.adam(1e-3)`` are two
    unequal objects. First, :func:`closure_key`: their code and closed-over values, which is
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
    closures = closure_key(optimizer)
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


def cached_programs(config: Config, params) -> Programs:
    """The programs of ``config``, compiled once for every equal configuration."""
    key = config._replace(optimizer=optimizer_key(config.optimizer, params))
    try:
        hash(key)
    except TypeError:  # an unhashable loss or method: programs of their own
        return programs(config)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = programs(config)
        if len(_PROGRAMS) > _CACHE_SIZE:
            _PROGRAMS.popitem(last=False)
    _PROGRAMS.move_to_end(key)
    return _PROGRAMS[key]
