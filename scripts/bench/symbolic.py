"""Section ``sympy``: SymPy's closed forms, derivation + lambdify + first jitted call, as P
grows."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

import functional_nn as fnn
from bench.common import Section, problem


def bench_sympy(quick: bool) -> list[dict]:
    """SymPy's closed forms: derivation + lambdify + first jitted call, as P grows."""
    from derivations import sympy_gradient
    from derivations.method import closed_form

    rows = []
    archs = [(4, 3, 2), (6, 4, 2)] if quick else [(4, 3, 2), (8, 6, 4), (16, 8, 1)]
    for sizes in archs:
        net = fnn.Network(sizes, bias=False)
        params, x, y = problem(net, "bce", 32, jnp.float32)
        closed_form.cache_clear()
        start = time.perf_counter()
        jax.block_until_ready(jax.jit(functools.partial(sympy_gradient, net, "bce"))(params, x, y))
        rows.append(
            {
                "sizes": list(sizes),
                "P": net.num_params(),
                "first_call_s": time.perf_counter() - start,
            }
        )
    return rows


def run(ctx) -> dict:
    return {"sympy": bench_sympy(ctx.quick)}


def render(ctx, out: dict) -> None:
    ctx.console.print(
        "sympy_gradient, derivation + lambdify + first jitted call: "
        + ", ".join(
            f"P={r['P']} ({'-'.join(map(str, r['sizes']))}) {r['first_call_s']:.2f} s"
            for r in out["sympy"]
        )
    )


SECTION = Section("sympy", run, render)
