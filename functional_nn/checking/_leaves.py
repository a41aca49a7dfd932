"""What the front doors share about the trees they check: their structure and dtypes, their
values flattened, and callables that compare equal by the function they wrap (so that one
compiled program serves every call with the same function)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_same_structure(expected, got, where: str, what: str, against: str = "params"):
    """Raise ``TypeError`` when ``got`` (``what``: "the gradient", "the VJP") has another tree
    structure than ``expected`` (``against``: "params", "primals"), showing both."""
    te, tg = jax.tree_util.tree_structure(expected), jax.tree_util.tree_structure(got)
    if te != tg:
        raise TypeError(f"{where}: {what} has another tree structure than {against}:\n"
                        f"  {what}: {tg}\n  {against}: {te}")  # fmt: skip


def check_floating_leaves(g, where: str, what: str = "the gradient"):
    """Raise ``TypeError`` naming the first leaf of ``g`` that is not floating point (an
    integer gradient is truncated, never a derivative)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(g)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{where}: {what}'s leaf {jax.tree_util.keystr(path) or '(root)'} has dtype "
                f"{dtype}; expected a floating dtype (float32 or float64)"
            )


def flat_float64(tree) -> np.ndarray:
    """Every leaf of ``tree`` raveled, in tree order, as one float64 NumPy vector (host)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in leaves])


class Keyed:
    """A callable equal to another of its class wrapping the same function (``fn``)."""

    def __init__(self, fn):
        self.fn = fn

    def __eq__(self, other):
        return type(other) is type(self) and other.fn is self.fn

    def __hash__(self):
        return hash((type(self).__name__, id(self.fn)))
