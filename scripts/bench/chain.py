"""Sections ``chain`` and ``memory``: jacobian_chain's time and XLA's peak memory against
autodiff, on the lecture's network and on 784-256-10."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import functional_nn as fnn
from bench.common import Section, problem
from bench.timing import memory_bytes, paired


def bench_jacobian_chain(dtype, pairs: int, batch: int = 1000) -> dict:
    """The lecture's network (4-3-2, sigmoid, BCE, no bias) at batch 1000."""
    net = fnn.Network((4, 3, 2), bias=False)
    params, x, y = problem(net, "bce", batch, dtype)
    chain = functools.partial(fnn.jacobian_chain, net, "bce")
    autodiff = functools.partial(fnn.autodiff, net, "bce")
    r = paired(jax.jit(chain), jax.jit(autodiff), params, x, y, pairs=pairs)
    return {
        "network": "4-3-2 (lecture)",
        "batch": batch,
        "dtype": jnp.dtype(dtype).name,
        "jacobian_chain_ms": 1e3 * r["a_s"],
        "autodiff_ms": 1e3 * r["b_s"],
        "jacobian_chain_over_autodiff": r["ratio"],
        **{f"jacobian_chain_{k}": v for k, v in memory_bytes(chain, params, x, y).items()},
        **{f"autodiff_{k}": v for k, v in memory_bytes(autodiff, params, x, y).items()},
    }


def bench_jacobian_chain_memory() -> dict:
    """XLA's peak for jacobian_chain on 784-256-10 at batch 1024, float32 (the chunk bound)."""
    net = fnn.Network((784, 256, 10), hidden="relu", output="softmax")
    params, x, y = problem(net, "cross_entropy", 1024, jnp.float32)
    chain = memory_bytes(functools.partial(fnn.jacobian_chain, net, "cross_entropy"), params, x, y)
    auto = memory_bytes(functools.partial(fnn.autodiff, net, "cross_entropy"), params, x, y)
    return {"network": "784-256-10", "batch": 1024, "jacobian_chain": chain, "autodiff": auto}


def run_chain(ctx) -> dict:
    return {"jacobian_chain": bench_jacobian_chain(ctx.dtype, ctx.pairs)}


def render_chain(ctx, out: dict) -> None:
    chain = out["jacobian_chain"]
    ctx.console.print(
        f"jacobian_chain, {chain['network']}, batch {chain['batch']}: "
        f"{chain['jacobian_chain_ms']:.3f} ms ({chain['jacobian_chain_over_autodiff']:.2f}x"
        f" autodiff), peak memory {chain['jacobian_chain_peak_bytes'] / 2**10:.0f} KiB "
        f"(autodiff {chain['autodiff_peak_bytes'] / 2**10:.0f} KiB)"
    )


def run_memory(ctx) -> dict:
    return {"jacobian_chain_memory": bench_jacobian_chain_memory()}


def render_memory(ctx, out: dict) -> None:
    mem = out["jacobian_chain_memory"]
    ctx.console.print(
        f"jacobian_chain, 784-256-10, batch 1024, float32: peak "
        f"{mem['jacobian_chain']['peak_bytes'] / 2**20:.0f} MiB (autodiff "
        f"{mem['autodiff']['peak_bytes'] / 2**20:.1f} MiB)"
    )


CHAIN = Section("chain", run_chain, render_chain)
MEMORY = Section("memory", run_memory, render_memory)
