r"""The parameters as one vector, and directions in it drawn leaf by leaf.

Finite differences perturb :math:`\theta`, the parameter pytree flattened row-major in tree
order (the order of :func:`jax.flatten_util.ravel_pytree`); the checkers draw their random
directions per leaf, on the host, so that a small leaf gets directions of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def check_float_dtype(dtype, where: str):
    """The real dtype of ``dtype`` (complex counts as its real part): float32 or wider, or a
    ``ValueError`` (a finite-difference step is meaningless in 16 bits)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.finfo(dtype).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{where}: parameters must be floating point; got {dtype}")
    if jnp.finfo(dtype).bits < 32:
        raise ValueError(
            f"{where}: {dtype} has {jnp.finfo(dtype).nmant + 1} significant bits; a "
            "finite-difference step is meaningless there (cast to float32 or float64)"
        )
    return dtype


def ravel_params(tree) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """Flatten a pytree of floating arrays to one vector ``theta`` (row-major, tree order).

    ``unravel`` keeps the dtype of the vector it is given (unlike
    :func:`jax.flatten_util.ravel_pytree`'s, which casts back), so that a complex step reaches
    ``f`` complex.

    >>> theta, unravel = ravel_params({"a": jnp.ones((2, 2)), "b": jnp.zeros(1)})
    >>> theta.tolist(), unravel(theta)["a"].shape
    ([1.0, 1.0, 1.0, 1.0, 0.0], (2, 2))
    """
    leaves = jax.tree_util.tree_leaves(tree)
    unravel = unraveler(tree)
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    theta = (
        jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])
        if leaves
        else jnp.zeros((0,), dtype)
    )
    return theta, unravel


def unraveler(tree) -> Callable[[jax.Array], Any]:
    """The ``unravel`` of :func:`ravel_params`, built from the structure alone (no array op)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    for leaf in leaves:
        check_float_dtype(jnp.result_type(leaf), "finite differences")
    shapes = [jnp.shape(leaf) for leaf in leaves]
    sizes = [math.prod(s) for s in shapes]
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def unravel(t):
        parts = [t[offsets[i] : offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
        return jax.tree_util.tree_unflatten(treedef, parts)

    return unravel
