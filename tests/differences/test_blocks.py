"""Evaluations of a function of a pytree with one leaf moved, each against a direct
evaluation of ``f``: the outputs raveled in tree order and widened to float64 (complex128),
chunks sized by a memory budget (powers of two, padded, the padding never counted), the
pattern's changes, the progress calls, and which functions take a leaf complex."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from functional_nn._compile import _shared
from functional_nn.differences._blocks import CHUNK, SHARED_SHAPES, LeafFunction

PARAMS = {"w": jnp.arange(12.0).reshape(3, 4) / 10 - 0.5, "b": jnp.array([0.5, -0.2, 0.1])}
X = jnp.array([1.0, -2.0, 0.5])
B, W = 0, 1  # the leaves in tree order: keys sorted


def net(p, x):
    """Outputs of every kind: a tuple inside a dict, a vector, a scalar."""
    h = jnp.tanh(p["w"].T @ x)
    return {"z": (h, jnp.sum(h) * p["b"]), "a": jnp.sum(p["b"] ** 2)}


def direct(f, params, l, leaf, args=()):
    """``f`` at ``params`` with leaf ``l`` replaced, raveled by ``ravel_pytree``, in float64
    or complex128."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    leaves[l] = leaf
    out = ravel_pytree(f(jax.tree_util.tree_unflatten(treedef, leaves), *args))[0]
    return np.asarray(out).astype(np.complex128 if np.iscomplexobj(out) else np.float64)


def moves(l, k, dtype=np.float64, imaginary=False):
    """``deltas`` for leaf ``l`` of PARAMS: point ``i`` moves every entry by a pattern of its
    own, and the index asked for is recorded."""
    shape = jnp.shape(jax.tree_util.tree_leaves(PARAMS)[l])
    asked = []

    def deltas(i):
        asked.append(np.array(i))
        base = np.arange(1, math.prod(shape) + 1).reshape(shape) / 7.0
        out = np.stack([np.cos(base * (j + 1)) * 0.01 * (j + 1) for j in i]).astype(dtype)
        return 1j * out if imaginary else out

    return deltas, asked


# -- the values --------------------------------------------------------------------------------


@pytest.mark.parametrize("l", [B, W], ids=["b", "w"])
def test_each_point_is_f_with_only_leaf_l_moved_raveled_in_tree_order(l):
    lf = LeafFunction(net, PARAMS, (X,))
    leaf = jax.tree_util.tree_leaves(PARAMS)[l]
    assert lf.m == ravel_pytree(net(PARAMS, X))[0].size == 8 and lf.out_dtype == jnp.float64
    deltas, _ = moves(l, 5)
    values, changed = lf.evaluate(l, deltas, 5, False)
    assert values.shape == (5, 8) and values.dtype == np.float64
    assert changed.shape == (5,) and changed.dtype == bool and not changed.any()
    d = deltas(np.arange(5))
    for i in range(5):
        np.testing.assert_allclose(values[i], direct(net, PARAMS, l, leaf + d[i], (X,)),
                                   rtol=1e-14, atol=1e-15)  # fmt: skip
    # the other leaf was not moved: f's value at an unmoved point is f(params)
    np.testing.assert_allclose(lf.at(l, leaf), ravel_pytree(net(PARAMS, X))[0], rtol=1e-15)
    assert lf.evaluations == 5


def test_leaves_of_a_shared_shape_run_op_by_op_the_others_whole_and_both_are_f():
    """Three leaves of one shape (a deep MLP's layers) run op by op; the fourth, of a shape of
    its own, as one program; each point is f with that leaf moved, either way."""
    layers = {f"w{i}": jnp.sin(jnp.arange(9.0) + i).reshape(3, 3) for i in range(SHARED_SHAPES)}
    params = {**layers, "v": jnp.arange(3.0) / 4}

    def deep(p):
        h = jnp.ones(3)
        for i in range(SHARED_SHAPES):
            h = jnp.tanh(p[f"w{i}"] @ h)
        return h * p["v"]

    lf = LeafFunction(deep, params)
    leaves = jax.tree_util.tree_leaves(params)
    v = 0  # "v" sorts first
    assert lf._eager == set(range(1, SHARED_SHAPES + 1))
    before = dict(_shared._PROGRAMS)
    rng = np.random.default_rng(0)
    for l in (1, v):
        d = rng.standard_normal((3, *leaves[l].shape)) / 100
        values, _ = lf.evaluate(l, lambda i, d=d: d[i], 3, False)
        for i in range(3):
            np.testing.assert_allclose(values[i], direct(deep, params, l, leaves[l] + d[i]),
                                       rtol=1e-14, atol=1e-15)  # fmt: skip
    assert len(set(_shared._PROGRAMS) - set(before)) == 1  # v's program alone was compiled whole


def test_a_later_check_of_the_same_computation_reuses_its_whole_program():
    """Another function object, other values of the other leaves: the same program (nothing
    compiled again), and the values of the new point."""

    def make():
        return lambda p, x: jnp.tanh(p["w"].T @ x) * jnp.sum(p["b"])

    first, second = LeafFunction(make(), PARAMS, (X,)), LeafFunction(make(), PARAMS, (X + 1,))
    deltas, _ = moves(W, 2)
    first.evaluate(W, deltas, 2, False)
    kept = dict(_shared._PROGRAMS)
    values, _ = second.evaluate(W, deltas, 2, False)
    assert dict(_shared._PROGRAMS) == kept
    moved = PARAMS["w"] + deltas([1])[0]
    np.testing.assert_allclose(values[1], direct(make(), PARAMS, W, moved, (X + 1,)), rtol=1e-14)


def test_programs_that_print_alike_but_compute_apart_are_never_shared():
    """What a printed program does not show: an inner jit's constant, a host callback. Each
    function keeps its own values (a shared program would return the first one's)."""

    def with_const(c):
        inner = jax.jit(lambda w: w * jnp.asarray(c))
        return lambda p: jnp.sum(inner(p["w"]), axis=0) + p["b"][0]

    def with_callback(c):
        host = lambda w: np.asarray(w * c, w.dtype)  # noqa: E731
        out = jax.ShapeDtypeStruct((3, 4), jnp.float64)
        return lambda p: (
            jnp.sum(jax.pure_callback(host, out, p["w"], vmap_method="sequential"), axis=0)
            + p["b"][0]
        )

    deltas, _ = moves(W, 1)
    for make in (with_const, with_callback):
        f2, f3 = make(np.full((3, 4), 2.0)), make(np.full((3, 4), 3.0))
        v2 = LeafFunction(f2, PARAMS).evaluate(W, deltas, 1, False)[0][0]
        v3 = LeafFunction(f3, PARAMS).evaluate(W, deltas, 1, False)[0][0]
        moved = PARAMS["w"] + deltas([0])[0]
        np.testing.assert_allclose(v2, direct(f2, PARAMS, W, moved), rtol=1e-14)
        np.testing.assert_allclose(v3, direct(f3, PARAMS, W, moved), rtol=1e-14)
        assert not np.allclose(v2, v3)


def test_outputs_of_any_pytree_are_raveled_as_ravel_pytree_does():
    def mixed(p):
        return [p["b"][0], {"y": jnp.outer(p["b"], p["b"]), "x": (jnp.sum(p["w"]),)}]

    lf = LeafFunction(mixed, PARAMS)
    assert lf.m == 1 + 1 + 9
    np.testing.assert_array_equal(lf.flat(mixed(PARAMS)), ravel_pytree(mixed(PARAMS))[0])
    deltas, _ = moves(B, 2)
    values, _ = lf.evaluate(B, deltas, 2, False)
    d = deltas(np.arange(2))
    for i in range(2):
        np.testing.assert_allclose(values[i], direct(mixed, PARAMS, B, PARAMS["b"] + d[i]),
                                   rtol=1e-15)  # fmt: skip


def test_a_float32_function_comes_back_in_float64_with_its_float32_values():
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), PARAMS)
    lf = LeafFunction(net, p32, (X.astype(jnp.float32),))
    assert lf.out_dtype == jnp.float32
    deltas, _ = moves(W, 3, np.float32)
    values, _ = lf.evaluate(W, deltas, 3, False)
    assert values.dtype == np.float64
    d = deltas(np.arange(3))
    for i in range(3):
        want = direct(net, p32, W, p32["w"] + d[i], (X.astype(jnp.float32),))
        np.testing.assert_allclose(values[i], want, rtol=2e-7, atol=1e-7)
        # float32 values widened, not recomputed in float64
        np.testing.assert_array_equal(values[i], values[i].astype(np.float32))


def test_complex_moves_come_back_in_complex128():
    def analytic(p):
        return {"s": jnp.sum(jnp.sin(p["w"])), "v": jnp.exp(p["b"])}

    lf = LeafFunction(analytic, PARAMS)
    for l in (B, W):
        leaf = jax.tree_util.tree_leaves(PARAMS)[l]
        deltas, _ = moves(l, 3, imaginary=True)
        values, _ = lf.evaluate(l, deltas, 3, True)
        assert values.dtype == np.complex128 and values.shape == (3, 4)
        d = deltas(np.arange(3))
        for i in range(3):
            want = direct(analytic, PARAMS, l, leaf.astype(complex) + d[i])
            assert np.abs(want.imag).max() > 1e-4  # the imaginary parts are really there
            np.testing.assert_allclose(values[i], want, rtol=1e-14)


# -- chunks ---------------------------------------------------------------------------------------


def test_a_tiny_budget_gives_chunks_of_one_and_the_same_values():
    small = LeafFunction(net, PARAMS, (X,), budget_bytes=1)
    large = LeafFunction(net, PARAMS, (X,), budget_bytes=2**30)
    for l in (B, W):
        assert small.chunk_size(l, 40, False) == 1 and small.chunk_size(l, 40, True) == 1
        assert large.chunk_size(l, 40, False) == CHUNK
        deltas, asked = moves(l, 7)
        v_small, _ = small.evaluate(l, deltas, 7, False)
        assert [len(i) for i in asked] == [1] * 7
        deltas, asked = moves(l, 7)
        v_large, _ = large.evaluate(l, deltas, 7, False)
        assert [len(i) for i in asked] == [CHUNK]  # a cheap f: one chunk shape, padded
        np.testing.assert_allclose(v_small, v_large, rtol=1e-14, atol=1e-15)
    assert small.evaluations == large.evaluations == 14


def wide(p, x):
    """``net`` through an intermediate of 12 x 20,000 float64 (1.9 MB): an expensive point."""
    return jnp.sum(jnp.tanh(jnp.outer(p["w"].ravel(), jnp.linspace(0, 1, 20_000))) * p["b"][0])


@given(st.integers(0, 2**28), st.integers(1, 100), st.booleans())
def test_chunk_sizes_are_powers_of_two_up_to_CHUNK_and_one_size_where_cheap(
    budget, points, is_complex
):
    lf = LeafFunction(net, PARAMS, (X,), budget_bytes=budget)
    c = lf.chunk_size(W, points, is_complex)
    assert 1 <= c <= CHUNK and c & (c - 1) == 0
    assert c == lf.chunk_size(W, 1, is_complex)  # cheap: one shape, whatever the points
    expensive = LeafFunction(wide, PARAMS, (X,), budget_bytes=budget)
    c = expensive.chunk_size(W, points, is_complex)
    assert 1 <= c <= CHUNK and c & (c - 1) == 0
    assert c < 2 * points  # an expensive f: no chunk is more than half padding


def test_the_last_chunk_is_padded_with_its_last_point_and_padding_is_not_counted():
    calls = []
    lf = LeafFunction(net, PARAMS, (X,), progress=lambda n, label: calls.append((n, label)))
    deltas, asked = moves(B, 40)
    values, _ = lf.evaluate(B, deltas, 40, False, "ladder")
    assert [len(i) for i in asked] == [16, 16, 16]  # one shape for every chunk
    np.testing.assert_array_equal(asked[2], [*range(32, 40), *[39] * 8])
    assert values.shape == (40, 8) and lf.evaluations == 40
    assert calls == [(16, "ladder"), (32, "ladder"), (40, "ladder")]  # once per chunk, running
    d = deltas(np.arange(40))
    for i in (0, 31, 32, 39):  # either side of a chunk's edge, and the last real point
        np.testing.assert_allclose(values[i], direct(net, PARAMS, B, PARAMS["b"] + d[i], (X,)),
                                   rtol=1e-14, atol=1e-15)  # fmt: skip
    # a second call keeps counting
    deltas, _ = moves(W, 3)
    lf.evaluate(W, deltas, 3, False, "central")
    assert lf.evaluations == 43 and calls[-1] == (43, "central") and len(calls) == 4


def test_padding_does_not_change_results():
    """The same points, evaluated in chunks of 1 (no padding), 4 (one padded) and 16."""
    results = []
    for budget in (1, None, 2**30):
        lf = LeafFunction(net, PARAMS, (X,), budget_bytes=budget or 2**30)
        if budget is None:
            lf.chunk_size = lambda l, points, is_complex: 4  # noqa: ARG005
        deltas, _ = moves(W, 5)
        values, changed = lf.evaluate(W, deltas, 5, False)
        assert lf.evaluations == 5 and values.shape == (5, 8) and changed.shape == (5,)
        results.append(values)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(results[0], results[2], rtol=1e-14, atol=1e-15)


def test_no_points_no_evaluations():
    lf = LeafFunction(net, PARAMS, (X,))
    values, changed = lf.evaluate(B, moves(B, 0)[0], 0, False)
    assert values.shape == (0, 8) and changed.shape == (0,) and lf.evaluations == 0


def test_a_memory_budget_bounds_the_chunk_by_the_largest_intermediate():
    """``outer(p, p)`` of a 1000-entry leaf: 8 MB per point. A chunk holds at most what the
    budget holds (twice over for complex points), and no less than one point."""

    def gram(p):
        return jnp.sum(jnp.outer(p, p) ** 2)

    p = jnp.linspace(-1, 1, 1000)
    per_point = 1000 * 1000 * 8
    for budget in (1, per_point, 5 * per_point, 64 * 2**20, 2**40):
        lf = LeafFunction(gram, p, budget_bytes=budget)
        real, cplx = lf.chunk_size(0, 100, False), lf.chunk_size(0, 100, True)
        assert real == 1 or real * per_point <= budget
        assert cplx == 1 or cplx * 2 * per_point <= budget
        assert cplx <= real
    assert LeafFunction(gram, p, budget_bytes=64 * 2**20).chunk_size(0, 100, False) in (2, 4, 8)
    assert LeafFunction(gram, p, budget_bytes=2**40).chunk_size(0, 100, False) == CHUNK
    # and the moved leaf alone counts: a 10^6-entry leaf of a cheap f
    big = jnp.zeros(10**6)
    lf = LeafFunction(lambda q: q[0], big, budget_bytes=32 * 2**20)
    assert lf.chunk_size(0, 100, False) * big.nbytes <= 32 * 2**20


# -- the pattern ----------------------------------------------------------------------------------


def test_points_that_change_the_pattern_are_flagged():
    def sign_of_b(p, x):
        return p["b"] > 0  # b = (0.5, -0.2, 0.1)

    lf = LeafFunction(net, PARAMS, (X,), pattern=sign_of_b)
    shifts = np.array([[0.0, 0.0, 0.0], [0.0, 0.19, 0.0], [0.0, 0.21, 0.0], [-0.6, 0, 0],
                       [0.0, 0.0, -0.05], [0.0, 0.0, -0.11]])  # fmt: skip
    values, changed = lf.evaluate(B, lambda i: shifts[i], 6, False)
    assert changed.tolist() == [False, False, True, True, False, True]
    np.testing.assert_allclose(values[2], direct(net, PARAMS, B, PARAMS["b"] + shifts[2], (X,)),
                               rtol=1e-14)  # fmt: skip
    # moving another leaf changes nothing in the pattern of b
    _, changed = lf.evaluate(W, lambda i: np.ones((len(i), 3, 4)), 3, False)
    assert not changed.any()


def test_the_pattern_reads_the_real_part_of_complex_moves():
    lf = LeafFunction(lambda p: jnp.sum(p**2), jnp.array([0.5, -0.2]), pattern=lambda p: p > 0)
    moves_ = np.array([[1j, 1j], [-0.6 + 1j, 0]])
    values, changed = lf.evaluate(0, lambda i: moves_[i], 2, True)
    assert changed.tolist() == [False, True] and values.dtype == np.complex128
    np.testing.assert_allclose(values[0, 0], np.sum((np.array([0.5, -0.2]) + 1j) ** 2))


# -- accepts_complex -----------------------------------------------------------------------------


def _raises_on_complex(x):
    if jnp.iscomplexobj(x):
        raise TypeError("real input only")
    return x


def _every_leaf(g):
    return lambda p: jnp.sum(g(p["w"])) + jnp.sum(g(p["b"]))


def through_abs(p):
    return jnp.sum(jnp.abs(p["w"])) + jnp.sum(p["b"] ** 2)


def through_maximum(p):
    return jnp.sum(jnp.maximum(p["w"], 0.0) * 3.0) + jnp.sum(p["b"])


def conj_square(p):
    return jnp.sum(p["w"] * jnp.conj(p["w"])) + jnp.sum(p["b"])


@pytest.mark.parametrize(
    "f, b, w",
    [(_every_leaf(jnp.sin), True, True), (conj_square, True, True),
     (through_maximum, True, True), (through_abs, True, False),
     (_every_leaf(jnp.abs), False, False), (_every_leaf(jnp.real), False, False),
     (_every_leaf(lambda x: (x > 0) * 1.0), False, False),
     (_every_leaf(jnp.floor), False, False), (_every_leaf(_raises_on_complex), False, False)],
    ids=["sin", "conj", "maximum", "abs_in_w", "abs", "real", "comparison", "floor_raises",
         "raises"],
)  # fmt: skip
def test_accepts_complex_needs_complex_in_and_complex_out(f, b, w):
    """Leaf by leaf: ``through_abs`` is real when ``w`` is moved complex (its other term,
    ``b**2``, stays real), complex when ``b`` is. Necessary, not sufficient: ``conj_square``
    is complex out in ``w`` and not analytic there; the validation of the complex step
    catches those."""
    lf = LeafFunction(f, PARAMS)
    assert lf.accepts_complex(B) is b and lf.accepts_complex(W) is w
    assert lf.evaluations == 0  # a trace only


def test_accepts_complex_is_per_leaf():
    def real_in_w(p):
        return jnp.sum(jnp.real(p["w"])) + jnp.sum(jnp.sin(p["b"]))

    lf = LeafFunction(real_in_w, PARAMS)
    assert lf.accepts_complex(B) and not lf.accepts_complex(W)
