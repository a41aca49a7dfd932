"""Section ``methods``: warm value-and-gradient, backprop and jacobian_chain against autodiff."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import functional_nn as fnn
from bench.common import CHAIN_UP_TO, Section, factor_entries, problem
from bench.peak import float32_default_peak
from bench.render import fmt, table
from bench.timing import interleaved, paired

# (label, Network kwargs, loss, batch): the networks of the core issue
NETWORKS = [
    ("64-32-32-1", dict(sizes=(64, 32, 32, 1), hidden="relu"), "bce", 256),
    ("784-256-256-10", dict(sizes=(784, 256, 256, 10), hidden="relu"), "bce", 256),
    (
        "1024-2048-2048-1024",
        dict(sizes=(1024, 2048, 2048, 1024), hidden="relu", output="identity"),
        "mse",
        1024,
    ),
]


def gradient_flops(net: fnn.Network, batch: int) -> int:
    """Flops a value-and-gradient needs: forward, weight gradients, and input gradients for
    layers 2..L+1 (the first layer needs none). Elementwise work is not counted."""
    mults = [o * i for o, i in zip(net.sizes[1:], net.sizes[:-1], strict=True)]
    return 2 * batch * (2 * sum(mults) + sum(mults[1:]))


def bench_methods(networks, dtype, pairs: int, chain: bool = True) -> list[dict]:
    """backprop (and, where its factors stay small, jacobian_chain) against autodiff, value
    and gradient, jitted, per network. jacobian_chain gets rounds of its own: a call that
    allocates hundreds of MB slows the call after it."""
    rows = []
    for label, kw, loss, batch in networks:
        net = fnn.Network(**kw)
        params, x, y = problem(net, loss, batch, dtype)
        autodiff = jax.jit(functools.partial(fnn.autodiff, net, loss))
        backprop = jax.jit(functools.partial(fnn.backprop, net, loss))
        r = interleaved({"autodiff": autodiff, "backprop": backprop}, params, x, y, pairs=pairs)
        flops = gradient_flops(net, batch)
        rows.append(
            {
                "network": label,
                "batch": batch,
                "dtype": jnp.dtype(dtype).name,
                "backprop_ms": 1e3 * r["s"]["backprop"],
                "autodiff_ms": 1e3 * r["s"]["autodiff"],
                "backprop_over_autodiff": r["ratio"]["backprop"],
                "backprop_gflops": flops / r["s"]["backprop"] / 1e9,
                "autodiff_gflops": flops / r["s"]["autodiff"] / 1e9,
                "calls_per_sample": r["k"]["backprop"],
                "rounds": r["rounds"],
                "factor_entries_per_sample": factor_entries(net),
                "jacobian_chain_ms": None,
                "jacobian_chain_over_autodiff": None,
                "jacobian_chain_note": f"{factor_entries(net) * batch:.2g} factor entries"
                if chain
                else "not in --quick",
            }
        )
        if chain and factor_entries(net) * batch <= CHAIN_UP_TO:
            f = jax.jit(functools.partial(fnn.jacobian_chain, net, loss))
            rc = paired(f, autodiff, params, x, y, pairs=max(2, pairs // 3), max_s=5)
            rows[-1]["jacobian_chain_ms"] = 1e3 * rc["a_s"]
            rows[-1]["jacobian_chain_over_autodiff"] = rc["ratio"]
    return rows


def run(ctx) -> dict:
    ctx.notes["float32_peak"] = float32_default_peak(ctx.results)
    nets = NETWORKS[:2] if ctx.quick else NETWORKS
    return {"methods": bench_methods(nets, ctx.dtype, ctx.pairs, chain=not ctx.quick)}


def render(ctx, out: dict) -> None:
    peak = ctx.notes["float32_peak"]
    rows = [
        (
            r["network"],
            str(r["batch"]),
            f"{r['backprop_ms']:.3f}",
            f"{r['autodiff_ms']:.3f}",
            f"{r['backprop_over_autodiff']:.3f}",
            f"{r['backprop_gflops']:.1f}",
            f"{100 * r['backprop_gflops'] / peak:.0f}%",
            str(r["calls_per_sample"]),
            fmt(r["jacobian_chain_over_autodiff"], ".1f", f"- ({r['jacobian_chain_note']})"),
        )
        for r in out["methods"]
    ]
    ctx.console.print(
        table(
            "value and gradient, float32, default matmul precision, jitted "
            "(ratio: median of interleaved rounds)",
            (
                "network",
                "batch",
                "backprop ms",
                "autodiff ms",
                "backprop/autodiff",
                "backprop GFLOP/s",
                "% of f32 default peak",
                "K",
                "jacobian_chain/autodiff",
            ),
            rows,
        )
    )


SECTION = Section("methods", run, render)
