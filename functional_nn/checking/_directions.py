"""Directions drawn leaf by leaf: the seed of a check from a JAX key, a NumPy generator from
it, and random directions that are blocks of one leaf.

The checkers draw their random directions per leaf, so that a small leaf gets directions of
its own and is never swamped by a large one. A direction is a block of its leaf's shape, never
a vector of the whole tree: ``k`` directions of a leaf cost ``k`` times that leaf.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def seed_words(key: Any) -> tuple[int, ...]:
    """The ints that seed every direction of a check, from a JAX PRNG key (or an int)."""
    if isinstance(key, (int, np.integer)):
        return (int(key),)
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


def host_rng(key: Any) -> np.random.Generator:
    """A NumPy generator seeded from a JAX PRNG key (or an int): directions are drawn on the
    host, where drawing them compiles nothing."""
    words = seed_words(key)
    return np.random.default_rng(words[0] if len(words) == 1 else list(words))


class LeafDirections:
    """``k`` random directions in one leaf, blocks of its shape with unit max-norm, each
    drawn from a generator of its own (``seed`` and its index): any of them can be made
    again on demand, so only a chunk of them ever exists at once (NumPy, on the host, where
    drawing compiles nothing)."""

    def __init__(self, seed: tuple, shape: tuple, dtype, k: int):
        self.seed, self.shape, self.dtype, self.k = tuple(seed), tuple(shape), dtype, k

    def blocks(self, js) -> np.ndarray:
        """Directions ``js`` (ints): ``(len(js), *shape)`` in the leaf's dtype."""
        out = np.empty((len(js), *self.shape), self.dtype)
        for n, j in enumerate(js):
            v = np.random.default_rng([*self.seed, int(j)]).standard_normal(self.shape)
            peak = np.abs(v).max(initial=0)
            out[n] = v / (peak if peak > 0 else 1)
        return out

    def __array__(self, dtype=None, copy=None):
        return (
            self.blocks(range(self.k))
            if dtype is None
            else self.blocks(range(self.k)).astype(dtype)
        )


class PickedDirections(LeafDirections):
    """Directions ``js`` of another :class:`LeafDirections`, made again on demand: the
    directions whose comparison a checker confirms with more steps."""

    def __init__(self, parent: LeafDirections, js):
        super().__init__(parent.seed, parent.shape, parent.dtype, len(js))
        self.parent, self.js = parent, np.asarray(js, int)

    def blocks(self, js) -> np.ndarray:
        return self.parent.blocks(self.js[np.asarray(list(js), int)])


def leaf_directions(rng_seed: tuple, leaf, k: int) -> LeafDirections:
    """``k`` random directions in ``leaf`` (:class:`LeafDirections`), seeded by the ints
    ``rng_seed``."""
    return LeafDirections(rng_seed, tuple(jnp.shape(leaf)), jnp.result_type(leaf), k)
