"""Checks pin the matmul precision to the highest, whatever the process default.

On GPUs a float32 matmul is TF32 by default (about 1e-3 relative) and on TPUs bfloat16; the
float32 bars (1e-5 for the hand-written methods) and the finite-difference steps chosen from
float32's epsilon assume true float32 products. Every checker (``check_gradients``,
``check_grad``, ``check_vjp``, the finite differences, the eps study) runs under
:func:`highest_precision`; a user's own training keeps the default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import jax

F = TypeVar("F", bound=Callable[..., Any])


def highest_precision(fn: F) -> F:
    """``fn`` run under ``jax.default_matmul_precision("highest")``.

    Checks compare float32 results at bars of 1e-5; a TF32 (GPU) or bfloat16 (TPU) matmul,
    the default there, is far coarser. The context sets the precision of every matmul traced
    inside it, also when ``fn`` is traced under a caller's ``jit``; a user's own training keeps
    the process default.
    """

    @functools.wraps(fn)
    def pinned(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    return cast(F, pinned)  # the same signature: type checkers see ``fn``'s


def x64(on: bool = True):
    """A context in which JAX traces float64 (``jax.enable_x64(True)``; older JAX:
    ``jax.experimental.enable_x64()``), or with ``on=False`` does not, leaving the process's
    setting as it was. Used only around tracing and running a whole program (the screen,
    ``promote``), never inside a traced function (jax issue 27602)."""
    try:
        return jax.enable_x64(on)
    except (AttributeError, TypeError):  # pragma: no cover -- JAX before enable_x64 as a context
        from jax.experimental import disable_x64, enable_x64

        return enable_x64() if on else disable_x64()


def traces_float64() -> bool:
    """Whether float64 is on where this is called (the process's flag, or an ``x64()``
    context around it): what JAX makes of a float64 request here."""
    return jax.dtypes.canonicalize_dtype(jax.numpy.float64) == jax.numpy.float64
