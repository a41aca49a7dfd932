"""Section ``peak``: the device's matmul peak, sized to saturate it, its precision labelled."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from bench.common import Section
from bench.render import table
from bench.timing import run_k

PRECISION_NOTE = (
    "'default' is what a user's float32 training gets: TF32 on NVIDIA GPUs (A100 and later), "
    "bfloat16 passes on TPUs, true float32 on CPUs; the checks pin 'highest'"
)


def dot_peak(
    dtype, precision: str | None = None, max_n: int | None = None, saturated_s: float = 0.1
) -> dict:
    """GFLOP/s of a jitted square ``jnp.dot``: the device's practical peak for ``dtype``.

    The size doubles from 1024 until one call lasts ``saturated_s`` (so that the device is
    busy, not waiting on launches) or ``max_n`` (default 16384, 8192 for 8-byte types) is
    reached; the peak is timed at that size as K back-to-back calls and one wait.
    ``precision``: ``None`` for the process default, or ``"highest"``.
    """
    dtype = jnp.dtype(dtype)
    max_n = max_n or (8192 if dtype.itemsize >= 8 else 16384)
    prec = None if precision is None else jax.lax.Precision[precision.upper()]
    dot = jax.jit(functools.partial(jnp.dot, precision=prec))
    n = min(1024, max_n)
    while True:
        k1, k2 = jax.random.split(jax.random.key(0))
        a = jax.random.normal(k1, (n, n), jnp.float32).astype(dtype)
        b = jax.random.normal(k2, (n, n), jnp.float32).astype(dtype)
        jax.block_until_ready(dot(a, b))
        t = min(run_k(dot, (a, b)) for _ in range(2))
        if t >= saturated_s or 2 * n > max_n:
            break
        n *= 2
    # about 0.2 s per sample, with at most 2 GiB of outputs held until the wait
    k = max(1, min(math.ceil(0.2 / t), 2**31 // (n * n * dtype.itemsize)))
    samples = [run_k(dot, (a, b), k) for _ in range(3)]
    t = min([t, *samples])
    default = jax.config.jax_default_matmul_precision or "default"
    return {
        "dtype": dtype.name,
        "precision": precision or default,
        "n": n,
        "k": k,
        "gflops": 2 * n**3 / t / 1e9,
    }


def bench_peaks(quick: bool) -> list[dict]:
    """float32 under "highest" and under the default precision; float64; bfloat16."""
    cap = 1024 if quick and jax.default_backend() == "cpu" else None
    return [
        dot_peak(jnp.float32, "highest", cap),
        dot_peak(jnp.float32, None, cap),
        dot_peak(jnp.float64, None, cap),
        dot_peak(jnp.bfloat16, None, cap),
    ]


def float32_default_peak(results: dict) -> float:
    """GFLOP/s of float32 under the default precision: the ``peak`` section's figure when it
    ran, else measured now."""
    if "dot_peaks" not in results:
        return dot_peak(jnp.float32)["gflops"]
    return next(
        p["gflops"]
        for p in results["dot_peaks"]
        if p["dtype"] == "float32" and p["precision"] != "highest"
    )


def run(ctx) -> dict:
    return {"dot_peaks": bench_peaks(ctx.quick)}


def render(ctx, out: dict) -> None:
    rows = [
        (p["dtype"], p["precision"], str(p["n"]), f"{p['gflops']:.1f}") for p in out["dot_peaks"]
    ]
    ctx.console.print(
        table(
            "jnp.dot peak (square n x n, K back-to-back calls, one wait)",
            ("dtype", "matmul precision", "n", "GFLOP/s"),
            rows,
            left=2,
        )
    )
    ctx.console.print(f"  {PRECISION_NOTE}")


SECTION = Section("peak", run, render)
