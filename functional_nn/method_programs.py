"""The compiled programs of the methods :func:`~functional_nn.check_gradients` compares.

One executable per method and configuration, cached by (method, network, loss, reduction,
argument types), so that checking again compiles nothing; the uncached ones are lowered in
turn and compiled concurrently on the machine's cores; small problems compile with
:data:`~functional_nn.compilation_cache.FAST_COMPILE`.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp

from functional_nn.compilation_cache import FAST_COMPILE
from functional_nn.network import num_params

__all__ = ["compile_methods", "run_method"]


def _jitted(method, net, loss, reduction: str, info: bool):
    """A method as a jitted function of ``(params, x, y)``."""
    kw = {} if reduction == "sum" else {"reduction": reduction}
    if info:
        kw["return_info"] = True
    return jax.jit(functools.partial(method, net, loss, **kw))


SMALL = 10_000
"""Problems with ``P * x.size`` up to this compile with :data:`FAST_COMPILE`."""

_EXECUTABLES: dict = {}
"""Compiled programs by (method, net, loss, reduction, info, argument types): equal
configurations share one program across calls."""


def compile_methods(methods, net, loss, params, x, y, reduction) -> dict:
    """One executable per method, the uncached ones lowered in turn (tracing is Python) and
    compiled concurrently on the machine's cores (XLA compiles outside the GIL): the first
    verdict is dominated by compilation, and the methods' programs are independent."""
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
    lowered = {name: (key, info, f.lower(*args)) for name, (key, info, f) in todo.items()}
    workers = min(len(lowered), os.cpu_count() or 1)
    if lowered:
        with ThreadPoolExecutor(max(workers, 1)) as pool:
            options = FAST_COMPILE if num_params(params) * max(jnp.size(x), 1) <= SMALL else None
            done = pool.map(
                lambda item: item[2].compile(compiler_options=options), lowered.values()
            )
            compiled = dict(zip(lowered, done, strict=True))
        for name, (key, info, _) in lowered.items():
            out[name] = (compiled[name], info)
            if key is not None:
                _EXECUTABLES[key] = out[name]
                if len(_EXECUTABLES) > 256:  # the oldest goes first
                    del _EXECUTABLES[next(iter(_EXECUTABLES))]
    return out


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
