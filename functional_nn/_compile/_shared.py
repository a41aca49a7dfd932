"""Compiled programs shared by structure: two functions that compute the same thing (another
closure, another seed, the same model rebuilt) run one compiled program.

``jax.jit`` keeps a program per function object: a check of ``lambda p: loss(p, x, y)`` made
afresh each time (as research code and a test suite make them) traces, lowers and compiles
its gradient again, although nothing but the data changed. Here a function is traced
(:func:`jax.make_jaxpr`), and its program is looked up by :func:`structure`: the printed
program and the identity of what printing does not show whole. Its constants (the data, the
other leaves) are arguments of the program, never part of the key or baked into it.

For values only: a shared program is never differentiated (a custom rule's functions are left
out of the structure, :data:`CUSTOM_CALLS`). Lowering and compiling a small program cost 10 to
30 ms on 2 cores (the fixed part, an MLIR context and an LLVM module, about 10 ms); tracing it
again costs a few.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

import jax
import numpy as np

KEPT = 256
"""Shared programs kept, the least recently used dropped first."""

CUSTOM_CALLS = ("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")
"""A custom rule's call runs its primal program alone where nothing differentiates it: its
rules (new objects at every trace) are not part of the structure."""

PRINTED = (bool, int, float, complex, str, type(None), np.generic, np.dtype, Enum)
"""Values that a printed program shows whole."""

_PROGRAMS: OrderedDict[tuple, Callable] = OrderedDict()


def structure(jaxpr) -> tuple:
    """The key of a program (a ``Jaxpr`` or ``ClosedJaxpr``) up to its own constants: the
    printed program (every equation, its shapes, dtypes and literals) and the identity of
    every object in its equations that printing does not show whole: the constants of its
    inner programs, a callback, a sharding, an array literal (not a custom rule's functions,
    :data:`CUSTOM_CALLS`). Equal keys compute the same values from the same arguments and
    constants, as long as those objects live (:func:`shared_program` keeps them alive)."""
    opaque: list = []

    def visit(value, top: bool = False) -> None:
        inner = getattr(value, "jaxpr", None)
        if hasattr(value, "consts") and not top:  # a program's constants are not printed
            opaque.extend(value.consts)
        if inner is not None and inner is not value and hasattr(inner, "eqns"):  # closed
            visit(inner, top)
        elif hasattr(value, "eqns"):  # a program (jax 0.12: its own .jaxpr, with .consts)
            for eqn in value.eqns:
                for v in eqn.invars:  # an array literal prints abridged
                    if np.ndim(getattr(v, "val", None)) > 0:
                        opaque.append(v.val)
                custom = eqn.primitive.name in CUSTOM_CALLS
                for name, v in eqn.params.items():
                    if not custom or name in ("call_jaxpr", "fun_jaxpr"):
                        visit(v)
        elif isinstance(value, (tuple, list)):
            for v in value:
                visit(v)
        elif not isinstance(value, PRINTED):
            opaque.append(value)

    visit(jaxpr, top=True)
    return str(jaxpr), tuple(id(o) for o in opaque)


def shared_program(jaxpr) -> Callable:
    """``(consts, *args) -> flat outputs``: ``jaxpr`` jitted, shared with every earlier
    program of the same :func:`structure` (the :data:`KEPT` most recently used). An entry
    holds its program, so the identities in its key are never reused while it is kept."""
    key = structure(jaxpr)
    run = _PROGRAMS.get(key)
    if run is None:
        run = jax.jit(lambda consts, *args: jax.core.eval_jaxpr(jaxpr, consts, *args))
        _PROGRAMS[key] = run
        if len(_PROGRAMS) > KEPT:
            _PROGRAMS.popitem(last=False)
    else:
        _PROGRAMS.move_to_end(key)
    return run


def shared_jit(fn: Callable) -> Callable:
    """``jax.jit(fn)`` for values, its compiled program shared by every function of the same
    structure (:func:`shared_program`). Traced once per signature of the arguments (their
    tree, shapes, dtypes and weak types), as ``jax.jit`` traces; a pytree out, as ``fn``
    returns it. Arguments are arrays or scalars (no static ones)."""
    traced: dict = {}

    def call(*args):
        flat, tree = jax.tree_util.tree_flatten(args)
        signature = (tree, tuple(jax.typeof(a) for a in flat))
        entry = traced.get(signature)
        if entry is None:
            closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
            out_tree = jax.tree_util.tree_structure(shape)
            entry = traced[signature] = (shared_program(closed.jaxpr), closed.consts, out_tree)
        run, consts, out_tree = entry
        return jax.tree_util.tree_unflatten(out_tree, run(consts, *flat))

    return call
