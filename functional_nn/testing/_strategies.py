"""Hypothesis strategies for the trees the checkers take.

>>> from hypothesis import given
>>> @given(params_trees(dtypes=("float32",), max_leaves=3))
... def test_tree(params):
...     assert jax.tree_util.tree_leaves(params)
>>> test_tree()

Leaves hold finite values in ``[-bound, bound]`` (no subnormals: a check at a denormal point
tests the hardware's flush, not the gradient), cast to the leaf's dtype. A float64 or
complex128 leaf needs ``jax_enable_x64`` on when the strategy is made: without it JAX would
give float32 silently, so the strategy refuses.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as e:  # pragma: no cover - hypothesis is in the test and testing extras
    raise ImportError(
        "functional_nn.testing needs Hypothesis: pip install 'functional_nn[testing]' "
        "(or pip install hypothesis)"
    ) from e

DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
"""The leaf dtypes a strategy takes (the checkers' float and complex dtypes)."""

HELD_KINDS = ("key", "step", "counts")
"""Held leaves :func:`params_trees` can add beside the parameters: a new-style PRNG key, a
Python ``int`` step counter, an ``int32`` array of counts. The checkers hold them fixed."""

NAMES = ("w", "b", "kernel", "bias", "scale", "embed", "gate", "head")


def x64() -> bool:
    """Whether 64-bit arrays are on in this process (read when a strategy is made)."""
    return bool(jax.config.jax_enable_x64)


def _check_dtypes(dtypes: Sequence[str], where: str) -> tuple[str, ...]:
    dtypes = tuple(jnp.dtype(d).name for d in dtypes)
    if not dtypes:
        raise ValueError(f"{where}: dtypes is empty; give at least one of {DTYPES}")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ValueError(f"{where}: dtypes {unknown} are not among {DTYPES}")
    wide = [d for d in dtypes if d in ("float64", "complex128")]
    if wide and not x64():
        raise ValueError(
            f"{where}: {wide} leaves need x64, which is off (JAX would make them 32-bit "
            "silently): jax.config.update('jax_enable_x64', True) at the start of the process, "
            "or ask for float32/complex64"
        )
    return dtypes


def array_leaves(
    dtypes: Sequence[str] = ("float32",),
    *,
    max_dims: int = 2,
    min_side: int = 1,
    max_side: int = 4,
    bound: float = 2.0,
) -> st.SearchStrategy[jax.Array]:
    """One array leaf: a dtype drawn from ``dtypes``, a shape of ``0..max_dims`` axes of
    ``min_side..max_side`` entries, finite values in ``[-bound, bound]`` (real and imaginary
    parts alike)."""
    dtypes = _check_dtypes(dtypes, "array_leaves")
    if not (0 <= max_dims and 1 <= min_side <= max_side and bound > 0):
        raise ValueError(
            f"array_leaves: expected max_dims >= 0, 1 <= min_side <= max_side, bound > 0; got "
            f"max_dims={max_dims}, min_side={min_side}, max_side={max_side}, bound={bound}"
        )
    values = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False)

    @st.composite
    def leaf(draw):
        dtype = draw(st.sampled_from(dtypes))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=min_side,
                                      max_side=max_side))  # fmt: skip
        x = draw(hnp.arrays(np.float64, shape, elements=values))
        if dtype.startswith("complex"):
            x = x + 1j * draw(hnp.arrays(np.float64, shape, elements=values))
        return jnp.asarray(x, dtype)

    return leaf()


def params_trees(
    dtypes: Sequence[str] = ("float32",),
    *,
    max_leaves: int = 4,
    max_dims: int = 2,
    max_side: int = 4,
    bound: float = 2.0,
    held: Sequence[str] = (),
    equinox: bool = False,
) -> st.SearchStrategy:
    """A parameter pytree: array leaves (:func:`array_leaves`) nested in dicts (keys such as
    ``"w"``, ``"kernel"``), tuples and lists, at most ``max_leaves`` leaves.

    Args:
        held: kinds from :data:`HELD_KINDS`; the tree is then ``{"params": tree, kind: leaf,
            ...}``, the held leaves beside the parameters, as a training state holds them.
        equinox: draw an ``equinox.nn.MLP`` (sizes, depth, activation and a key drawn; its
            dtype the first of ``dtypes``, which must be real) instead of nested containers.
    """
    dtypes = _check_dtypes(dtypes, "params_trees")
    unknown = [h for h in held if h not in HELD_KINDS]
    if unknown:
        raise ValueError(f"params_trees: held {unknown} are not among {HELD_KINDS}")
    if max_leaves < 1:
        raise ValueError(f"params_trees: max_leaves must be at least 1; got {max_leaves}")
    if equinox:
        tree = _equinox_mlps(dtypes[0], max_side)
    else:
        leaves = array_leaves(dtypes, max_dims=max_dims, max_side=max_side, bound=bound)
        names = st.sampled_from(NAMES)
        tree = st.recursive(
            leaves,
            lambda inner: st.one_of(
                st.dictionaries(names, inner, min_size=1, max_size=3),
                st.lists(inner, min_size=1, max_size=3),
                st.lists(inner, min_size=1, max_size=3).map(tuple),
            ),
            max_leaves=max_leaves,
        )
    if not held:
        return tree
    return st.fixed_dictionaries({"params": tree, **{h: _held(h) for h in held}})


def _held(kind: str) -> st.SearchStrategy:
    seeds = st.integers(0, 2**31 - 1)
    if kind == "key":
        return seeds.map(jax.random.key)
    if kind == "step":
        return st.integers(0, 10_000)
    return hnp.arrays(np.int32, hnp.array_shapes(max_dims=1, max_side=4),
                      elements=st.integers(0, 100)).map(jnp.asarray)  # fmt: skip


def _equinox_mlps(dtype: str, max_side: int) -> st.SearchStrategy:
    try:
        import equinox as eqx
    except ImportError as e:
        raise ImportError("params_trees(equinox=True) needs Equinox: pip install equinox") from e
    if dtype.startswith("complex"):
        raise ValueError(f"params_trees(equinox=True): a real dtype comes first; got {dtype}")
    sides = st.integers(1, max_side)

    @st.composite
    def mlp(draw):
        activation = draw(st.sampled_from((jax.nn.tanh, jax.nn.sigmoid, jax.nn.softplus)))
        return eqx.nn.MLP(draw(sides), draw(sides), draw(sides), draw(st.integers(1, 2)),
                          activation=activation, dtype=jnp.dtype(dtype),
                          key=jax.random.key(draw(st.integers(0, 2**31 - 1))))  # fmt: skip

    return mlp()
