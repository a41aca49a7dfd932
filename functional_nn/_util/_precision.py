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

import jax


def highest_precision(fn: Callable) -> Callable:
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

    return pinned
