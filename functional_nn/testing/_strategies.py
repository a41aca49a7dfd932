"""Hypothesis strategies for the trees the checkers take.

>>> from hypothesis import given
>>> @given(params_trees(dtypes=("float32",), max_leaves=3))
... def test_tree(params):
...     assert jax.tree_util.tree_leaves(params)
>>> test_tree()

Leaves hold values finite in their dtype, in ``[-bound, bound]``, and no subnormals (a check
at a denormal point tests the hardware's flush, not the gradient): a value below the dtype's
smallest normal is drawn as 0, and a ``bound`` beyond its largest finite is refused. A float64
or complex128 leaf needs ``jax_enable_x64`` on when the strategy is made: without it JAX would
give float32 silently, so the strategy refuses. Every argument is checked when the strategy
is made, with an error that names it.
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

MAX_DIMS, MAX_SIDE = 8, 64  # a leaf's axes and entries per axis at most (checked: small trees)

NAMES = ("w", "b", "kernel", "bias", "scale", "embed", "gate", "head")


def x64() -> bool:
    """Whether 64-bit arrays are on in this process (read when a strategy is made)."""
    return bool(jax.config.jax_enable_x64)


def _names(value, what: str, where: str, example: str) -> tuple:
    """A sequence of names: a bare string or a non-sequence is refused, not iterated."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError(
            f"{where}: {what} must be a sequence of names such as {example}; got {value!r}"
        )
    return tuple(value)


def _check_dtypes(dtypes: Sequence[str], where: str) -> tuple[str, ...]:
    names = _names(dtypes, "dtypes", where, "('float32',)")
    if not names:
        raise ValueError(f"{where}: dtypes is empty; give at least one of {DTYPES}")
    known = []
    for d in names:
        try:
            known.append(jnp.dtype(d).name)
        except TypeError:
            raise ValueError(
                f"{where}: dtype {d!r} is not a dtype; expected one of {DTYPES}"
            ) from None
    unknown = [d for d in known if d not in DTYPES]
    if unknown:
        raise ValueError(f"{where}: dtypes {unknown} are not among {DTYPES}")
    wide = [d for d in known if d in ("float64", "complex128")]
    if wide and not x64():
        raise ValueError(
            f"{where}: {wide} leaves need x64, which is off (JAX would make them 32-bit "
            "silently): jax.config.update('jax_enable_x64', True) at the start of the process, "
            "or ask for float32/complex64"
        )
    return tuple(known)


def _check_int(value, name: str, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{where}: {name} must be an int in [{low}, {high}]; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{where}: {name} must be in [{low}, {high}]; got {value}")
    return int(value)


def _check_bound(bound, dtypes: tuple[str, ...], where: str) -> float:
    if isinstance(bound, bool) or not isinstance(bound, (int, float, np.floating, np.integer)):
        raise ValueError(f"{where}: bound must be a positive finite number; got {bound!r}")
    if not (np.isfinite(bound) and bound > 0):
        raise ValueError(f"{where}: bound must be a positive finite number; got {bound}")
    for d in dtypes:
        largest = float(jnp.finfo(d).max)
        if bound > largest:
            raise ValueError(
                f"{where}: bound {bound} exceeds {d}'s largest finite value {largest:.6g}: "
                "its leaves would hold inf"
            )
    return float(bound)


def _in_dtype(x: np.ndarray, dtype: str) -> jax.Array:
    """``x`` (float64 or complex128) as ``dtype``, entries below its smallest normal as 0."""
    tiny = float(jnp.finfo(dtype).tiny)
    flush = lambda a: np.where(np.abs(a) < tiny, 0.0, a)  # noqa: E731
    if np.iscomplexobj(x):
        x = flush(x.real) + 1j * flush(x.imag)
    else:
        x = flush(x)
    return jnp.asarray(x, dtype)


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
    where = "array_leaves"
    dtypes = _check_dtypes(dtypes, where)
    max_dims = _check_int(max_dims, "max_dims", where, 0, MAX_DIMS)
    min_side = _check_int(min_side, "min_side", where, 1, MAX_SIDE)
    max_side = _check_int(max_side, "max_side", where, 1, MAX_SIDE)
    if min_side > max_side:
        raise ValueError(
            f"{where}: expected 1 <= min_side <= max_side; got min_side={min_side}, "
            f"max_side={max_side}"
        )
    bound = _check_bound(bound, dtypes, where)
    values = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, allow_subnormal=False)

    @st.composite
    def leaf(draw):
        dtype = draw(st.sampled_from(dtypes))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=min_side,
                                      max_side=max_side))  # fmt: skip
        x = draw(hnp.arrays(np.float64, shape, elements=values))
        if dtype.startswith("complex"):
            x = x + 1j * draw(hnp.arrays(np.float64, shape, elements=values))
        return _in_dtype(x, dtype)

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
        equinox: draw an ``equinox.nn.MLP`` (sizes up to ``max_side``, depth, activation and
            a key drawn; its dtype the one of ``dtypes``, which must be real and alone)
            instead of nested containers; ``max_leaves``, ``max_dims`` and ``bound`` do not
            apply to it (Equinox initializes its weights).
    """
    where = "params_trees"
    dtypes = _check_dtypes(dtypes, where)
    held = _names(held, "held", where, "('key', 'step')")
    unknown = [h for h in held if h not in HELD_KINDS]
    if unknown:
        raise ValueError(f"{where}: held {unknown} are not among {HELD_KINDS}")
    if len(set(held)) < len(held):
        raise ValueError(f"{where}: held names a kind twice: {held}")
    max_leaves = _check_int(max_leaves, "max_leaves", where, 1, 64)
    max_dims = _check_int(max_dims, "max_dims", where, 0, MAX_DIMS)
    max_side = _check_int(max_side, "max_side", where, 1, MAX_SIDE)
    bound = _check_bound(bound, dtypes, where)
    if not isinstance(equinox, bool):
        raise ValueError(f"{where}: equinox must be True or False; got {equinox!r}")
    if equinox and len(dtypes) > 1:
        raise ValueError(
            f"{where}: equinox=True draws one model in one dtype; got dtypes={dtypes} (give one)"
        )
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
