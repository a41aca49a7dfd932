"""Directions drawn leaf by leaf on the host: where each leaf lies in the flat vector, rows
back as a pytree, a NumPy generator from a JAX key, and the directions themselves."""

import math

import jax
import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from functional_nn.checking._directions import (
    host_rng,
    leaf_slices,
    random_leaf_directions,
    unravel_rows,
)

SHAPES = st.lists(st.lists(st.integers(1, 3), max_size=2).map(tuple), min_size=1, max_size=4)


def _tree(shapes, dtype=np.float64):
    return {f"p{i}": np.ones(s, dtype) for i, s in enumerate(shapes)}


def test_leaf_slices_tile_the_flat_vector_in_tree_order():
    params = {"b": np.ones(()), "a": np.ones((2, 3)), "c": [np.ones(4)]}
    assert leaf_slices(params) == [(0, 6), (6, 7), (7, 11)]  # keys sorted: a, b, c
    assert leaf_slices({}) == []


@given(SHAPES)
def test_leaf_slices_agree_with_ravel_pytree(shapes):
    params = {f"p{i}": np.arange(math.prod(s), dtype=float).reshape(s) + 10 * i
              for i, s in enumerate(shapes)}  # fmt: skip
    flat, _ = ravel_pytree(params)
    for (a, b), leaf in zip(leaf_slices(params), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_array_equal(flat[a:b], np.ravel(leaf))


def test_unravel_rows_is_ravel_pytrees_unravel_row_by_row():
    params = {"W": np.zeros((2, 3)), "b": np.zeros(2), "s": np.zeros(())}
    _, unravel = ravel_pytree(params)
    V = np.arange(3 * 9, dtype=float).reshape(3, 9)
    tree = unravel_rows(V, params)
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params)
    for n in range(3):
        expected = unravel(V[n])
        for name in params:
            assert tree[name].shape == (3, *np.shape(params[name]))
            np.testing.assert_array_equal(tree[name][n], expected[name])


def test_host_rng_is_determined_by_the_key_and_an_int_is_a_numpy_seed():
    draw = lambda key: host_rng(key).standard_normal(4)  # noqa: E731
    np.testing.assert_array_equal(draw(jax.random.key(3)), draw(jax.random.key(3)))
    assert not np.array_equal(draw(jax.random.key(3)), draw(jax.random.key(4)))
    np.testing.assert_array_equal(draw(jax.random.PRNGKey(3)), draw(jax.random.key(3)))
    np.testing.assert_array_equal(draw(5), np.random.default_rng(5).standard_normal(4))
    np.testing.assert_array_equal(draw(np.int64(5)), draw(5))


@given(SHAPES, st.integers(1, 3))
def test_each_direction_lives_in_its_own_leaf_with_unit_max_norm(shapes, k):
    params = _tree(shapes)
    slices = leaf_slices(params)
    V = random_leaf_directions(params, k, np.random.default_rng(0))
    P = sum(math.prod(s) for s in shapes)
    assert V.shape == (k * len(shapes), P)
    for row, v in enumerate(V):
        a, b = slices[row // k]  # k rows per leaf, leaf by leaf
        outside = np.concatenate([v[:a], v[b:]])
        assert np.all(outside == 0)
        assert np.abs(v).max() == 1.0
        assert np.all(v[a:b] != 0)  # a Gaussian draw is never exactly zero


def test_directions_are_in_the_params_dtype_and_deterministic_from_a_key(key):
    f32 = _tree([(2,), (3,)], np.float32)
    V = random_leaf_directions(f32, 2, host_rng(key))
    assert V.dtype == np.float32
    np.testing.assert_array_equal(V, random_leaf_directions(f32, 2, host_rng(key)))
    other = random_leaf_directions(f32, 2, host_rng(jax.random.key(1)))
    assert not np.array_equal(V, other)
    mixed = {"a": np.ones(2, np.float32), "b": np.ones(1, np.float64)}
    assert random_leaf_directions(mixed, 1, host_rng(key)).dtype == np.float64


def test_leaves_selects_which_leaves_get_directions_in_the_order_given():
    params = _tree([(2,), (3,), (1,)])
    V = random_leaf_directions(params, 2, np.random.default_rng(0), leaves=[2, 0])
    assert V.shape == (4, 6)
    assert np.all(V[:2, :5] == 0) and np.all(V[:2, 5] != 0)  # leaf 2 is entry 5
    assert np.all(V[2:, 2:] == 0) and np.all(V[2:, :2] != 0)  # leaf 0 is entries 0, 1
    assert random_leaf_directions(params, 2, np.random.default_rng(0), leaves=[]).shape == (0, 6)


def test_an_empty_tree_has_no_directions():
    V = random_leaf_directions({}, 2, np.random.default_rng(0))
    assert V.shape == (0, 0)
