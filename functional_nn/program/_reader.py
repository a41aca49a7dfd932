"""Tracing ``f`` to its program and reading it: held leaves, source lines, floating types.

A program is traced at the dtypes ``f`` is written for and with the x64 setting the process
runs it with (``x64(on)``, ``on`` the setting where ``promote`` was called), so that it is
the program the user runs: with x64 off, closed-over NumPy float64 data is the float32 array
JAX makes of it, as in the user's own run. ``args`` may hold leaves that are not arrays
(functions, Python numbers, PRNG keys of Equinox modules): they are held as they are, out of
the program.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

_LIBRARY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_traced_leaf(a: Any) -> bool:
    """Whether a leaf of ``args`` enters the program (an array of a numeric dtype) or is held."""
    if isinstance(a, jax.core.Tracer):
        return True
    if not isinstance(a, (jax.Array, np.ndarray, np.generic)):
        return False
    dtype = np.dtype(a.dtype) if not jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else None
    return dtype is not None and (jnp.issubdtype(dtype, jnp.number) or dtype == np.dtype(bool))


class Split:
    """``args`` split into the leaves the program takes and the leaves held."""

    def __init__(self, args: tuple):
        self.leaves, self.treedef = jax.tree_util.tree_flatten(args)
        self.traced = [i for i, a in enumerate(self.leaves) if is_traced_leaf(a)]

    def arrays(self) -> list:
        return [self.leaves[i] for i in self.traced]

    def avals(self) -> tuple:
        return tuple((tuple(np.shape(a)), np.dtype(a.dtype).name) for a in self.arrays())

    def rebuild(self, arrays) -> tuple:
        leaves = list(self.leaves)
        for i, a in zip(self.traced, arrays, strict=True):
            leaves[i] = a
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def trace(f: Callable, split: Split, dtypes: tuple | None = None, x64_on: bool | None = None):
    """The program of ``f`` at the leaves of ``split`` (their shapes; their dtypes, or
    ``dtypes``): ``(closed jaxpr, output treedef)``, traced with x64 ``x64_on`` (default: the
    setting in force)."""
    from functional_nn._util._precision import traces_float64, x64

    if x64_on is not None and x64_on != traces_float64():
        with x64(x64_on):
            return trace(f, split, dtypes)
    structs = [
        jax.ShapeDtypeStruct(np.shape(a), np.dtype(a.dtype) if dtypes is None else dtypes[j])
        for j, a in enumerate(split.arrays())
    ]
    out_tree = []

    def flat(*arrays):
        out = f(*split.rebuild(arrays))
        leaves, treedef = jax.tree_util.tree_flatten(out)
        out_tree.append(treedef)
        return leaves

    closed = jax.make_jaxpr(flat)(*structs)
    return closed, out_tree[0]


def sub_jaxprs(params: dict) -> Iterator[tuple[str, Any]]:
    """The jaxprs among an equation's params: ``(name, Jaxpr or ClosedJaxpr)``; tuples of
    them (``cond``'s ``branches``) one by one, named ``branches[i]``."""
    for name, value in params.items():
        if isinstance(value, (jcore.Jaxpr, jcore.ClosedJaxpr)):
            yield name, value
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                if isinstance(v, (jcore.Jaxpr, jcore.ClosedJaxpr)):
                    yield f"{name}[{i}]", v


def open_jaxpr(j) -> jcore.Jaxpr:
    return j.jaxpr if isinstance(j, jcore.ClosedJaxpr) else j


def equations(jaxpr) -> Iterator:
    """Every equation of a program, those inside its sub-programs included (depth first)."""
    for eqn in open_jaxpr(jaxpr).eqns:
        yield eqn
        for _, sub in sub_jaxprs(eqn.params):
            yield from equations(sub)


def compute_dtypes(f: Callable, *args) -> set[str]:
    """The floating dtypes ``f``'s program computes in at ``args`` (every equation's floating
    outputs, inside calls, loops and custom rules too): ``{"float32", "bfloat16"}`` for a
    mixed-precision forward of float32 parameters.

    >>> import jax.numpy as jnp
    >>> w = jnp.ones(3, jnp.float32)
    >>> sorted(compute_dtypes(lambda w: jnp.sum(w.astype(jnp.bfloat16) ** 2), w))
    ['bfloat16', 'float32']
    """
    return jaxpr_dtypes(trace(f, Split(args))[0])


def jaxpr_dtypes(closed) -> set[str]:
    """:func:`compute_dtypes` of a program already traced (a closed jaxpr)."""
    found = set()
    for v in closed.jaxpr.invars:
        found.add(np.dtype(v.aval.dtype).name)
    for eqn in equations(closed):
        for v in eqn.outvars:
            dtype = getattr(v.aval, "dtype", None)
            if dtype is not None and not jnp.issubdtype(dtype, jax.dtypes.prng_key):
                found.add(np.dtype(dtype).name)
    return {d for d in found if jnp.issubdtype(d, jnp.inexact)}


def source_line(eqn) -> str:
    """``"file.py:LINE"`` of the user's code that made ``eqn``: the innermost frame outside
    jax and functional_nn ("unknown line" where JAX's source info cannot be read)."""
    frames = []
    try:
        from jax._src import source_info_util

        for arg in (eqn.source_info.traceback, eqn.source_info):  # jax 0.7 on; before
            try:
                frames = list(source_info_util.user_frames(arg))
            except Exception:  # noqa: BLE001 -- the other release's argument
                continue
            if frames:
                break
    except Exception:  # noqa: BLE001 -- an internal of JAX: missing, no line
        return "unknown line"
    for frame in frames:
        name = getattr(frame, "file_name", "")
        if name and not os.path.abspath(name).startswith(_LIBRARY):
            line = getattr(frame, "start_line", getattr(frame, "line_num", "?"))
            return f"{os.path.basename(name)}:{line}"
    return "unknown line"
