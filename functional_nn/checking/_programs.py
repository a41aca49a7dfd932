"""The compiled programs of the methods :func:`~functional_nn.check_gradients` compares.

One executable per method and configuration, cached by (method, network, loss, reduction,
argument types), so that checking again compiles nothing; the uncached ones are lowered in
turn, each compiled on a pool of threads while the next is traced; small problems compile with
:data:`~functional_nn._compile._options.FAST_COMPILE`. The library's own methods with a
built-in loss are traced with nested jits inlined
(:func:`~functional_nn._compile._tracing.inline_jits`).
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp

from functional_nn._compile import (
    compile_and_store,
    disk_key,
    fast_compile_options,
    inline_jits,
    library_names,
    load_executable,
)
from functional_nn.lecture._losses import LOSSES
from functional_nn.lecture._network import num_params


def _jitted(method, net, loss, reduction: str, info: bool):
    """A method as a jitted function of ``(params, x, y)``."""
    kw = {} if reduction == "sum" else {"reduction": reduction}
    if info:
        kw["return_info"] = True
    return jax.jit(functools.partial(method, net, loss, **kw))


SMALL = 10_000
"""Problems with ``P * x.size`` up to this compile with :data:`FAST_COMPILE`."""

WORKERS = 2

_EXECUTABLES: dict = {}
"""Compiled programs by (method, net, loss, reduction, info, argument types): equal
configurations share one program across calls."""


def compile_methods(methods, net, loss, params, x, y, reduction) -> dict:
    """One executable per method. The uncached ones are traced and lowered in turn (Python,
    under the GIL), and each is handed to a pool of compiling threads as soon as it is lowered
    (XLA compiles outside the GIL): the first verdict is dominated by compilation, the methods'
    programs are independent, and the next method is traced while the last one compiles."""
    args = (params, x, y)
    leaves, tree = jax.tree_util.tree_flatten(args)
    types = (tree, tuple((jnp.shape(a), jnp.result_type(a).name) for a in leaves))
    out, todo = {}, {}
    for name, method in methods.items():
        info = "return_info" in inspect.signature(method).parameters
        key = (method, net, loss, reduction, info, types)  # precision: always the highest
        try:
            hit = _EXECUTABLES.get(key)
        except TypeError:  # an unhashable method or loss: compile afresh, keep nothing
            key, hit = None, None
        if hit is None:
            todo[name] = (key, info, _jitted(method, net, loss, reduction, info))
        else:
            out[name] = hit
    if not todo:
        return out
    small = num_params(params) * max(jnp.size(x), 1) <= SMALL
    options = fast_compile_options() if small else None
    own_loss = library_loss_name(loss)
    on_disk = {}
    for name, (_, info, _) in list(todo.items()):
        disk = disk_key(methods[name], net, own_loss, reduction, info, args, options)
        on_disk[name] = disk
        loaded = load_executable(disk, args)
        if loaded is not None:
            out[name] = _keep(todo.pop(name)[0], (loaded, info))
    with ThreadPoolExecutor(max(1, min(len(todo), os.cpu_count() or 1))) as pool:
        futures = {}
        for name, (_, _, jitted) in todo.items():
            lowered = _lower(jitted, args, library_names(methods[name], own_loss))
            futures[name] = pool.submit(compile_and_store, lowered, on_disk[name], options)
        for name, (key, info, _) in todo.items():
            out[name] = _keep(key, (futures[name].result(), info))
    return out


def library_loss_name(loss) -> str | None:
    """The name of a built-in loss (given by name or as the very ``Loss`` object); ``None``
    for a loss from elsewhere."""
    if isinstance(loss, str):
        return loss
    if any(loss is built_in for built_in in LOSSES.values()):
        return loss.name
    return None


def _lower(jitted, args, own):
    """``jitted.lower(*args)``, with nested jits inlined for the library's own methods
    (``own``). Inlining rests on how ``jax.disable_jit`` acts while lowering, which is JAX's to
    change: where lowering so fails, the method is lowered as JAX lowers it (the plain path,
    the same program)."""
    if own:
        try:
            with inline_jits():
                return jitted.lower(*args)
        except Exception:  # noqa: BLE001 -- a JAX whose disable_jit acts otherwise
            pass
    return jitted.lower(*args)


def _keep(key, executable):
    """``executable`` kept in memory under ``key`` (if any); returned."""
    if key is not None:
        _EXECUTABLES[key] = executable
        if len(_EXECUTABLES) > 256:  # the oldest goes first
            del _EXECUTABLES[next(iter(_EXECUTABLES))]
    return executable


def forget_executables() -> None:
    """Drop the executables kept in memory (a later check loads or compiles them again)."""
    _EXECUTABLES.clear()


def run_method(executable, params, x, y):
    """Run a compiled method (warm-up, then one timed call); return J, grads, evaluations,
    kinks, seconds."""
    f, info = executable
    jax.block_until_ready(f(params, x, y))
    start = time.perf_counter()
    out = jax.block_until_ready(f(params, x, y))
    seconds = time.perf_counter() - start
    if info:
        (J, grads), evaluations, kinks = out
        return J, grads, int(evaluations), kinks, seconds
    J, grads = out
    return J, grads, 1, None, seconds
