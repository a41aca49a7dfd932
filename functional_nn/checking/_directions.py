"""Directions in the flattened parameters, drawn leaf by leaf on the host.

The checkers draw their random directions per leaf, so that a small leaf gets directions of
its own and is never swamped by a large one; drawing them with NumPy compiles nothing.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def leaf_slices(params: Any) -> list[tuple[int, int]]:
    """``(start, stop)`` of each leaf in the flattened vector, in tree order."""
    sizes = [math.prod(jnp.shape(a)) for a in jax.tree_util.tree_leaves(params)]
    starts = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)]


def unravel_rows(V: np.ndarray, params: Any) -> Any:
    """Rows of ``V`` ``(n, P)`` as a pytree like ``params`` with a leading axis ``n`` (host)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    parts = [V[:, a:b].reshape(V.shape[0], *np.shape(leaf))
             for (a, b), leaf in zip(leaf_slices(params), leaves, strict=True)]  # fmt: skip
    return jax.tree_util.tree_unflatten(treedef, parts)


def host_rng(key: Any) -> np.random.Generator:
    """A NumPy generator seeded from a JAX PRNG key (or an int): directions are drawn on the
    host, where drawing them compiles nothing."""
    if isinstance(key, (int, np.integer)):
        return np.random.default_rng(int(key))
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())


def random_leaf_directions(params: Any, k: int, rng: np.random.Generator, leaves=None):
    """``k`` random directions per leaf, each zero outside its leaf and of unit max-norm:
    ``(k * L, P)`` NumPy, leaf by leaf (``leaves``: indices of the leaves, default all)."""
    slices = leaf_slices(params)
    P = slices[-1][1] if slices else 0
    dtypes = [np.asarray(a).dtype for a in jax.tree_util.tree_leaves(params)]
    dtype = np.result_type(*dtypes) if dtypes else np.float64  # an empty tree: (0, 0)
    leaves = range(len(slices)) if leaves is None else leaves
    rows = []
    for l in leaves:
        a, b = slices[l]
        v = np.zeros((k, P))
        v[:, a:b] = rng.standard_normal((k, b - a))
        rows.append(v / np.abs(v).max(axis=1, keepdims=True))
    return (np.concatenate(rows) if rows else np.zeros((0, P))).astype(dtype)
