"""Directions drawn leaf by leaf on the host: the seed of a check from a key, a NumPy generator
from it, and random directions that are blocks of one leaf, made again on demand."""

import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from functional_nn.checking._directions import (
    LeafDirections,
    host_rng,
    leaf_directions,
    seed_words,
)

SHAPES = st.lists(st.integers(1, 4), max_size=3).map(tuple)


def test_seed_words_are_an_int_or_the_words_of_a_key():
    assert seed_words(5) == (5,) and seed_words(np.int64(5)) == (5,)
    words = seed_words(jax.random.key(3))
    assert all(isinstance(w, int) for w in words) and len(words) >= 2
    assert words == seed_words(jax.random.PRNGKey(3))  # raw and typed keys alike
    assert words != seed_words(jax.random.key(4))


def test_host_rng_is_determined_by_the_key_and_an_int_is_a_numpy_seed():
    draw = lambda key: host_rng(key).standard_normal(4)  # noqa: E731
    np.testing.assert_array_equal(draw(jax.random.key(3)), draw(jax.random.key(3)))
    assert not np.array_equal(draw(jax.random.key(3)), draw(jax.random.key(4)))
    np.testing.assert_array_equal(draw(jax.random.PRNGKey(3)), draw(jax.random.key(3)))
    np.testing.assert_array_equal(draw(5), np.random.default_rng(5).standard_normal(4))
    np.testing.assert_array_equal(draw(np.int64(5)), draw(5))


@given(SHAPES, st.integers(1, 5))
def test_each_direction_is_a_block_of_the_leafs_shape_with_unit_max_norm(shape, k):
    d = leaf_directions((7, 1), np.ones(shape, np.float32), k)
    V = np.asarray(d)
    assert V.shape == (k, *shape) and V.dtype == np.float32
    for v in V:
        assert np.abs(v).max() == 1.0
        assert np.all(v != 0)  # a Gaussian draw is never exactly zero


def test_any_direction_is_made_again_alike_alone_or_in_any_chunk():
    """Direction j depends on the seed and j only: a chunk of them never needs the rest."""
    d = LeafDirections((1, 2, 3), (5, 4), np.float64, 6)
    every = d.blocks(range(6))
    np.testing.assert_array_equal(d.blocks([4]), every[4:5])
    np.testing.assert_array_equal(d.blocks([5, 0, 3]), every[[5, 0, 3]])
    np.testing.assert_array_equal(np.asarray(d), every)
    np.testing.assert_array_equal(np.asarray(d, np.float32), every.astype(np.float32))
    # the first directions of a larger k are those of a smaller one: k adds, it does not redraw
    np.testing.assert_array_equal(LeafDirections((1, 2, 3), (5, 4), np.float64, 2).blocks([0, 1]),
                                  every[:2])  # fmt: skip


def test_directions_are_independent_across_seeds_and_indices():
    d = np.asarray(LeafDirections((0,), (200,), np.float64, 3))
    other = np.asarray(LeafDirections((1,), (200,), np.float64, 3))
    for a, b in [(d[0], d[1]), (d[1], d[2]), (d[0], other[0])]:
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        assert abs(cos) < 0.3  # random directions in 200 dimensions: |cos| ~ 0.07


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_directions_are_in_the_leafs_dtype(dtype):
    assert np.asarray(leaf_directions((0,), np.ones(3, dtype), 2)).dtype == dtype


def test_a_scalar_leaf_and_an_empty_leaf():
    np.testing.assert_array_equal(np.abs(np.asarray(leaf_directions((0,), np.ones(()), 2))), 1.0)
    assert np.asarray(leaf_directions((0,), np.ones((0, 3)), 2)).shape == (2, 0, 3)
