"""What the front doors share about the trees they check: their structure and dtypes, their
values flattened, and callables that compare equal by the function they wrap (so that one
compiled program serves every call with the same function)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

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
    """A callable equal to another of its class wrapping the same function (``fn``: the same
    object, or an equal :class:`Bound`)."""

    def __init__(self, fn):
        self.fn = fn

    def __eq__(self, other):
        return type(other) is type(self) and same_function(other.fn, self.fn)

    def __hash__(self):
        return hash((type(self).__name__, function_key(self.fn)))


def same_function(a, b) -> bool:
    """``a is b``, or two :class:`Bound` of the same function through equal views."""
    return a is b or (type(a) is Bound and a == b)


def function_key(fn):
    return hash(fn) if type(fn) is Bound else id(fn)


class Bound:
    """``fn`` seen through a view of its argument (the held leaves put back, complex pairs
    made complex): ``call(p, *rest)``, equal to another ``Bound`` of the same ``fn`` whose
    view has an equal ``token``, so that a repeated check of the same model (an Equinox
    module, its activations held) finds its compiled programs again."""

    def __init__(self, fn, token, call):
        self.fn, self.token, self.call = fn, token, call

    def __call__(self, *args):
        return self.call(*args)

    def __eq__(self, other):
        return (type(other) is Bound and same_function(other.fn, self.fn)
                and other.token == self.token)  # fmt: skip

    def __hash__(self):
        try:
            return hash((function_key(self.fn), self.token))
        except TypeError:  # an unhashable static part of the tree: equal to itself only
            return id(self)


def leaf_token(leaf):
    """What a held leaf contributes to a view's token: NumPy arrays (mutable) by value,
    Python scalars by value, everything else (functions, JAX arrays, keys) by identity (the
    view keeps it alive, so the identity stays its own)."""
    if isinstance(leaf, np.ndarray):
        return ("numpy", leaf.dtype.str, leaf.shape, leaf.tobytes())
    if leaf is None or isinstance(leaf, (bool, int, float, complex, str)):
        return ("value", type(leaf).__name__, leaf)
    return ("object", id(leaf))


def is_checked(leaf) -> bool:
    """Whether the checkers differentiate a leaf: an array (JAX or NumPy) of an inexact dtype.
    Every other leaf is held fixed: functions and other objects, integer and bool arrays,
    PRNG keys, Python numbers (as ``equinox.is_inexact_array`` sorts them)."""
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        return False
    dtype = leaf.dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):  # a PRNG key
        return False
    return bool(jnp.issubdtype(dtype, jnp.inexact))


class HeldSlot:
    """Where a held leaf was: an empty subtree, so the engine sees no leaf there."""

    def __repr__(self):
        return "HeldSlot()"


jax.tree_util.register_pytree_node(HeldSlot, lambda s: ((), None), lambda aux, ch: HeldSlot())


class Held(NamedTuple):
    """A tree split into the leaves a checker differentiates and those it holds fixed.

    Attributes:
        tree: the tree with every held leaf replaced by a :class:`HeldSlot` (an empty
            subtree): what the engine checks, its paths those of the tree as given.
        paths: the held leaves' paths, in tree order (empty: ``tree`` is the tree as given).
        fill: ``tree-like -> the full tree``, the held leaves put back.
        pick: ``(full-tree-like, what, where) -> tree-like``: a user's gradient or VJP with
            ``None``, zeros or anything at the held leaves, reduced to the checked ones.
        blank: ``tree-like -> the full tree``, ``None`` at the held leaves (tangents for a
            user's JVP).
        token: what makes two splits the same (the structure, which leaves are held, and
            each held leaf's :func:`leaf_token`): :func:`through` keys compiled programs on it.
    """

    tree: Any
    paths: list[str]
    fill: Callable
    pick: Callable
    blank: Callable
    token: Any = None


def hold(tree, where: str, name: str = "params") -> Held:
    """Split ``tree`` (:class:`Held`); a ``ValueError`` if no leaf is left to check."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = [leaf for _, leaf in flat]
    mask = [is_checked(leaf) for leaf in leaves]
    paths = [jax.tree_util.keystr(p) or "(root)" for p, _ in flat]
    held = [p for p, m in zip(paths, mask, strict=True) if not m]
    if not held:
        return Held(tree, [], lambda t: t, lambda g, what, where: g, lambda t: t)
    if not any(mask):
        raise ValueError(f"{where}: {name} has no floating-point array leaf to check (held: "
                         f"{', '.join(held)})")  # fmt: skip

    def unflatten(xs):
        return treedef.unflatten(xs)

    def up_to(t, what, where):
        try:
            return treedef.flatten_up_to(t)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{where}: {what} has another tree structure than {name}: "
                            f"{e}") from None  # fmt: skip

    def fill(t):
        got = up_to(t, name, where)
        return unflatten([g if m else h for g, h, m in zip(got, leaves, mask, strict=True)])

    def pick(g, what, where):
        got = up_to(g, what, where)
        return unflatten([x if m else HeldSlot() for x, m in zip(got, mask, strict=True)])

    def blank(t):
        got = up_to(t, name, where)
        return unflatten([x if m else None for x, m in zip(got, mask, strict=True)])

    token = (treedef, tuple(mask), tuple(leaf_token(x) for x, m in zip(leaves, mask, strict=True)
                                         if not m))  # fmt: skip
    return Held(unflatten([x if m else HeldSlot() for x, m in zip(leaves, mask, strict=True)]),
                held, fill, pick, blank, token)  # fmt: skip


def through(held: Held, fn: Callable | None) -> Callable | None:
    """``fn`` of the full tree as a function of the checked one (its other arguments passed
    on), a :class:`Bound`; ``fn`` itself where nothing is held, None for None."""
    if fn is None or not held.paths:
        return fn
    return Bound(fn, held.token, lambda p, *rest: fn(held.fill(p), *rest))


def held_note(held: Held) -> str:
    """What a report's description says of the held leaves (empty for none)."""
    if not held.paths:
        return ""
    return f"; held fixed (not inexact arrays): {', '.join(held.paths)}"
