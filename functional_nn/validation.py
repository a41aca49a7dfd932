"""Argument checks shared by every public function: one place for each rule.

Every check raises ``ValueError`` (or ``TypeError`` for a value of the wrong kind) with a
message that names where it happened, the argument, what was expected and what came. Checks
of *values* (finiteness, ranges) run only on concrete arrays, never on tracers, and never copy
a device array to the host: a ``jax.Array`` is reduced on its device to one scalar, a NumPy
array or Python value is checked on the host where it already is.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["check_int", "check_real", "count_nonfinite", "is_concrete"]


def is_concrete(a: Any) -> bool:
    """Whether ``a`` holds values now (not a tracer under ``jit``, ``grad`` or ``vmap``)."""
    return not isinstance(a, jax.core.Tracer)


def count_nonfinite(a: Any) -> int:
    """The number of non-finite entries of a concrete array, counted where it lives.

    A ``jax.Array`` is reduced on its device (one scalar comes back, whatever its size or
    sharding); anything else (NumPy, Python numbers, nested lists) is counted with NumPy.
    """
    if isinstance(a, jax.Array):
        if not jnp.issubdtype(a.dtype, jnp.inexact):
            return 0
        return int(jnp.sum(~jnp.isfinite(a)))
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.inexact):
        return 0
    return int(np.size(a) - np.count_nonzero(np.isfinite(a)))


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
