"""Argument checks shared by every public function: one place for each rule.

Every check raises ``ValueError`` (or ``TypeError`` for a value of the wrong kind) with a
message that names where it happened, the argument, what was expected and what came. Checks
of *values* (finiteness, ranges) run only on concrete arrays, never on tracers, and never copy
a device array to the host: a ``jax.Array`` on an accelerator (or over several devices) is
reduced there and a few counts come back; one on a single CPU device, a NumPy array or a Python
value is read by NumPy where it already is (see :func:`value_stats`).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(a: Any) -> bool:
    """Whether ``a`` holds values now (not a tracer under ``jit``, ``grad`` or ``vmap``)."""
    return not isinstance(a, jax.core.Tracer)


def _stats(xp, a, lo, hi, rows_tol):
    """Counts ``[non-finite, below lo, above hi, rows off 1]`` and values ``[min, max, first
    such row sum]`` of a real array ``a`` (``rows_tol`` 0: rows unchecked), with ``xp`` numpy
    or jax.numpy. Min and max are over the finite entries."""
    if not xp.issubdtype(a.dtype, xp.floating):
        a = a.astype(xp.float32)
    elif xp is not np:
        a = a.astype(xp.promote_types(a.dtype, xp.float32))  # sums of bfloat16 would round
    finite = xp.isfinite(a)
    safe = xp.where(finite, a, 0)
    below = xp.sum(safe < lo) if lo is not None else xp.zeros((), xp.int32)
    above = xp.sum(safe > hi) if hi is not None else xp.zeros((), xp.int32)
    if a.size:
        amin, amax = xp.min(xp.where(finite, a, xp.inf)), xp.max(xp.where(finite, a, -xp.inf))
    else:
        amin = amax = xp.zeros((), a.dtype)
    if rows_tol and a.ndim and a.size:
        sums = xp.sum(safe, axis=-1).ravel()
        off = xp.abs(sums - 1) > rows_tol
        rows, example = xp.sum(off), xp.where(xp.any(off), sums[xp.argmax(off)], 1)
    else:
        rows, example = xp.zeros((), xp.int32), xp.ones((), a.dtype)
    counts = xp.stack([xp.asarray(c, xp.int32) for c in (xp.sum(~finite), below, above, rows)])
    return counts, xp.stack([xp.asarray(v, a.dtype) for v in (amin, amax, example)])


_device_stats = jax.jit(functools.partial(_stats, jnp), static_argnums=(1, 2, 3))


class ValueStats(NamedTuple):
    """What :func:`value_stats` found in an array (its finite entries for min and max)."""

    nonfinite: int
    below: int
    above: int
    min: float
    max: float
    rows_off: int
    row_sum: float


def _in_host_memory(a: jax.Array) -> bool:
    """Whether NumPy can read ``a`` in place: one CPU device, fully addressable."""
    devices = a.devices()
    return a.is_fully_addressable and len(devices) == 1 and next(iter(devices)).platform == "cpu"


def _quick_host_stats(a: np.ndarray, lo, hi, rows_tol) -> ValueStats | None:
    """The common case in two passes: min and max are finite (a nan or inf would show there)
    and within range, and no rows to check. ``None`` when the full count is needed."""
    if a.size == 0 or rows_tol:
        return None
    amin, amax = a.min(), a.max()
    if not (np.isfinite(amin) and np.isfinite(amax)):
        return None
    if (lo is not None and amin < lo) or (hi is not None and amax > hi):
        return None
    return ValueStats(0, 0, 0, float(amin), float(amax), 0, 1.0)


def value_stats(a: Any, lo: float | None = None, hi: float | None = None,
                rows_tol: float = 0.0) -> ValueStats:  # fmt: skip
    """Count the non-finite entries of a concrete real array, those below ``lo`` and above
    ``hi``, and (``rows_tol > 0``) the rows whose sum is off 1 by more than ``rows_tol``.

    A ``jax.Array`` on an accelerator, or spread over several devices, is reduced there by
    one compiled program and only these seven numbers come back. A ``jax.Array`` on one CPU
    device lives in host memory already: NumPy reads it in place (no copy, and no program to
    compile for each new shape, which would cost a cold process more than the check). NumPy
    arrays and Python numbers are reduced with NumPy. No whole array is ever copied.

    >>> value_stats(np.array([0.5, np.nan, 3.0]), 0.0, 1.0)[:3]
    (1, 0, 1)
    """
    if isinstance(a, jax.Array) and not _in_host_memory(a):
        stats = _device_stats(a, lo, hi, float(rows_tol))
        if isinstance(stats[0], jax.core.Tracer):  # ``a`` is a constant inside a trace
            with jax.ensure_compile_time_eval():
                stats = _device_stats(a, lo, hi, float(rows_tol))
        counts, values = jax.device_get(stats)
    else:
        a = np.asarray(a)
        if a.dtype.kind != "f" or a.dtype.itemsize < 4:  # ints, bools, float16, bfloat16
            a = a.astype(np.float64 if a.dtype.kind in "iub" else np.float32)
        quick = _quick_host_stats(a, lo, hi, rows_tol)
        if quick is not None:
            return quick
        counts, values = _stats(np, a, lo, hi, float(rows_tol))
    n, below, above, rows = (int(c) for c in counts)
    amin, amax, example = (float(v) for v in values)
    return ValueStats(n, below, above, amin, amax, rows, example)


def count_nonfinite(a: Any) -> int:
    """The number of non-finite entries of a concrete array, counted where it lives
    (:func:`value_stats`); 0 for an integer or boolean array."""
    dtype = a.dtype if hasattr(a, "dtype") else np.asarray(a).dtype
    if not np.issubdtype(dtype, np.inexact):
        return 0
    if np.issubdtype(dtype, np.complexfloating):
        return count_nonfinite(a.real) + count_nonfinite(a.imag)
    return value_stats(a).nonfinite


def check_finite(a: Any, name: str, where: str) -> None:
    """Raise ``ValueError`` if a concrete ``a`` has a non-finite entry (tracers pass)."""
    if is_concrete(a):
        n = count_nonfinite(a)
        if n:
            raise ValueError(
                f"{where}: {name} has {n} non-finite entries (nan or inf) of {np.size(a)}; "
                "every entry must be finite"
            )


def check_finite_leaves(tree: Any, name: str, where: str) -> None:
    """Raise ``ValueError`` naming the first concrete leaf of ``tree`` with a non-finite entry
    (``name`` is the argument, e.g. ``"params"``; tracers pass): a difference quotient, or a
    check, at a ``nan`` point says nothing about the gradient."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(leaf, "dtype") or isinstance(leaf, (int, float, complex)):
            check_finite(leaf, f"{name}{jax.tree_util.keystr(path)}", where)


def cast_like(grads: Any, params: Any) -> Any:
    """``grads`` with each leaf in the dtype of the matching leaf of ``params``, in the
    container types of ``params`` (the two trees must have the same leaves)."""
    leaves = jax.tree_util.tree_leaves(grads)
    p_leaves, treedef = jax.tree_util.tree_flatten(params)
    if len(leaves) != len(p_leaves):
        raise ValueError(
            f"cast_like: gradients have {len(leaves)} leaves but params have {len(p_leaves)}"
        )
    cast = [
        jnp.asarray(g).astype(jnp.result_type(p)) for g, p in zip(leaves, p_leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, cast)


def check_array(a: Any, name: str, where: str, shape: str = "") -> None:
    """Raise ``TypeError`` unless ``a`` is a real numeric array (``jax.Array``, NumPy array
    or scalar, or a tracer of one); lists and strings are not converted silently."""
    if not isinstance(a, (jax.Array, np.ndarray, np.generic)):
        raise TypeError(
            f"{where}: {name} must be an array (jax.Array or numpy.ndarray){shape}; got "
            f"{type(a).__name__} (convert it with jnp.asarray({name}))"
        )
    if not jnp.issubdtype(a.dtype, jnp.number) or jnp.issubdtype(a.dtype, jnp.complexfloating):
        raise TypeError(f"{where}: {name} must hold real numbers; got dtype {a.dtype}")


def check_key(key: Any, name: str, where: str) -> None:
    """Raise ``TypeError`` unless ``key`` is a JAX PRNG key: a typed key
    (``jax.random.key(0)``, shape ``()``) or a raw one (``jax.random.PRNGKey(0)``, uint32
    ``(2,)``), concrete or traced.

    >>> check_key(0, "key", "Network.init")
    Traceback (most recent call last):
    ...
    TypeError: Network.init: key must be a JAX PRNG key such as jax.random.key(0); got 0 (int)
    """
    ok = False
    if isinstance(key, jax.Array):  # tracers included
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            ok = key.ndim == 0
        else:
            ok = key.dtype == jnp.uint32 and key.shape == (2,)
    if not ok:
        what = f"{key!r:.60} ({type(key).__name__})"
        if isinstance(key, jax.Array):
            what = f"an array of dtype {key.dtype} and shape {key.shape}"
        raise TypeError(
            f"{where}: {name} must be a JAX PRNG key such as jax.random.key(0); got {what}"
        )


def check_int(value: Any, name: str, where: str, minimum: int = 1) -> int:
    """``value`` as an ``int >= minimum``; Python and NumPy ints are welcome, bools are not.

    >>> check_int(3, "steps", "fit")
    3
    >>> check_int(True, "steps", "fit")
    Traceback (most recent call last):
    ...
    TypeError: fit: steps must be an int >= 1; got True (a bool)
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,)):
        kind = "a bool" if isinstance(value, (bool, np.bool_)) else type(value).__name__
        raise TypeError(f"{where}: {name} must be an int >= {minimum}; got {value!r} ({kind})")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be an int >= {minimum}; got {value!r}")
    return int(value)


def check_real(
    value: Any,
    name: str,
    where: str,
    low: float = 0.0,
    high: float = float("inf"),
    *,
    low_open: bool = True,
    high_open: bool = True,
) -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (open ends by default).

    Python ints and floats, NumPy scalars and concrete 0-d arrays (JAX or NumPy) are welcome;
    bools, strings, complex numbers, non-finite values and arrays of other shapes are not.

    >>> check_real(np.float32(0.25), "eps", "finite_difference_grad", 0.0, 1.0)
    0.25
    >>> check_real(2.0, "eps", "finite_difference_grad", 0.0, 1.0)
    Traceback (most recent call last):
    ...
    ValueError: finite_difference_grad: eps must be a real number in (0.0, 1.0); got 2.0
    """
    interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    rule = f"{where}: {name} must be a real number in {interval}"
    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise TypeError(f"{rule}; got {value!r} ({type(value).__name__})")
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{rule}, known before tracing; got a traced value")
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        if np.shape(value) != () or not np.issubdtype(np.asarray(value).dtype, np.number):
            raise TypeError(f"{rule}; got an array of shape {np.shape(value)}")
        if np.iscomplexobj(value) or np.asarray(value).dtype == np.bool_:
            raise TypeError(f"{rule}; got {value!r}")
        value = float(value)
    elif not isinstance(value, numbers.Real):
        raise TypeError(f"{rule}; got {value!r} ({type(value).__name__})")
    value = float(value)
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not np.isfinite(value) or below or above:
        raise ValueError(f"{rule}; got {value!r}")
    return value
