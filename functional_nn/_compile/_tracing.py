"""Tracing the library's own code cheaply: one program per method call, nested jits inlined.

A method called outside ``jit`` (``backprop(net, loss, params, x, y)``) would otherwise run
operation by operation, compiling a small program for each operation and each new shape;
:func:`one_program` makes it one program per configuration. :func:`inline_jits` traces with
``jnp``'s own nested jits inlined, and :func:`scan` and :func:`as_loop` keep the library's
loops loops under it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable

import jax


@contextlib.contextmanager
def inline_jits():
    """Trace with every ``jax.jit`` met inside inlined: ``jnp``'s own (``jnp.where``,
    ``jnp.sum``, ``jnp.matmul`` and the rest are jitted functions) and the library's.

    Each such call is otherwise a trace of its own, cached per signature, and under ``vmap``
    a jaxpr batched and lowered of its own: in a fresh process that costs more than the
    arithmetic it wraps. Inlined (``jax.disable_jit`` while ``jit(...).lower`` traces), the
    same primitives land directly in the one program; XLA inlines nested calls anyway, so the
    compiled program computes the same (the built-in methods' results are identical,
    ``tests/_compile/test_compilation_cache.py``). ``jax.disable_jit`` also runs ``lax.scan``
    and ``lax.map`` as Python loops, one copy of the body per step: every loop of the
    library's gradient methods goes through :func:`scan` or :func:`as_loop`, which keep it one
    loop. Only for code written so:
    :func:`~functional_nn.check_gradients` traces the library's own methods with built-in
    losses under it, never a user's method or loss.
    """
    token = _INLINING.set(True)
    try:
        with jax.disable_jit():
            yield
    finally:
        _INLINING.reset(token)


_INLINING = contextvars.ContextVar("functional_nn_inline_jits", default=False)


def as_loop(loop: Callable, body: Callable, *args, **kwargs):
    """``loop(body, *args, **kwargs)`` (``jax.lax.scan``, ``jax.lax.map``): one loop in the
    program, also under :func:`inline_jits`, whose body is then traced inlined too. Outside
    it, exactly ``loop(body, ...)`` (under a user's own ``jax.disable_jit``, a Python loop)."""
    if not _INLINING.get():
        return loop(body, *args, **kwargs)

    def inlined(*a, **k):
        with jax.disable_jit():
            return body(*a, **k)

    with jax.disable_jit(False):  # the loop itself: a loop, not a Python unrolling
        return loop(inlined, *args, **kwargs)


@functools.cache
def _compiled(core: Callable, n_static: int) -> Callable:
    return jax.jit(core, static_argnums=tuple(range(n_static)))


def one_program(n_static: int) -> Callable[[Callable], Callable]:
    """Decorator: ``core(*statics, *arrays)``, its first ``n_static`` arguments static, runs as
    one compiled program per configuration when called with concrete arrays, and inline when
    traced (:func:`run_compiled`)."""

    def decorate(core: Callable) -> Callable:
        @functools.wraps(core)
        def one(*args):
            return run_compiled(core, args[:n_static], args[n_static:])

        return one

    return decorate


def scan(f: Callable, init, xs, **kwargs):
    """``jax.lax.scan(f, init, xs, **kwargs)``, one loop also under :func:`inline_jits`."""
    return as_loop(jax.lax.scan, f, init, xs, **kwargs)


def run_compiled(core: Callable, statics: tuple, arrays: tuple):
    """``core(*statics, *arrays)``: one compiled program per configuration when the arrays are
    concrete (a method called outside ``jit``), inline when they are traced.

    Called outside ``jit``, a method would otherwise run operation by operation, compiling a
    small program for each one and each new shape: one program is cheaper to compile (about
    half, cold) and much faster to run again. The arguments have been checked before.
    ``statics`` must be hashable (an unhashable custom loss runs operation by operation)."""
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays)):
        return core(*statics, *arrays)
    try:
        hash(statics)
    except TypeError:
        return core(*statics, *arrays)
    return _compiled(core, len(statics))(*statics, *arrays)
