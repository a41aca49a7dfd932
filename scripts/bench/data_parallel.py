"""Section ``data_parallel``: a ``fit`` step over 1, 2 and 4 simulated devices, each in a fresh
process forced onto the CPU platform; the worker those processes run."""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import optax

import functional_nn as fnn
from bench.common import Section, cold_env, problem, run_worker
from bench.library import data_mesh
from bench.render import table


def worker_data_parallel(arg) -> dict:
    """A fit step of 784-256-256-10 at batch 1024 over every device of this process."""
    steps = arg["steps"]
    net = fnn.Network((784, 256, 256, 10), hidden="relu", output="softmax")
    params, x, y = problem(net, "cross_entropy", 1024, jnp.float32)
    mesh = data_mesh() if len(jax.devices()) > 1 else None

    def run():
        return fnn.fit(
            net,
            "cross_entropy",
            params,
            x,
            y,
            optax.adam(1e-3),
            steps,
            reduction="mean",
            chunk_size=steps,
            mesh=mesh,
        )

    run()
    times, out = [], None
    for _ in range(3):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return {
        "devices": len(jax.devices()),
        "platform": jax.devices()[0].platform,
        "step_ms": 1e3 * min(times) / steps,
        "final_loss": float(out[1].loss[-1]),
    }


def bench_data_parallel(steps: int, devices=(1, 2, 4)) -> list[dict]:
    """The step on 1, 2 and 4 simulated devices, each in a fresh process forced onto the CPU
    platform (the device count is fixed when JAX starts; on a GPU machine too)."""
    rows = [run_worker("data_parallel", {"steps": steps}, cold_env(devices=n)) for n in devices]
    base = rows[0]
    for row in rows:
        row["over_1_device"] = row["step_ms"] / base["step_ms"]
        row["final_loss_diff"] = abs(row["final_loss"] - base["final_loss"])
    return rows


def run(ctx) -> dict:
    devices = (1, 2) if ctx.quick else (1, 2, 4)
    return {"data_parallel": bench_data_parallel(10 if ctx.quick else 20, devices)}


def render(ctx, out: dict) -> None:
    ctx.console.print(
        table(
            f"data-parallel fit step, 784-256-256-10, batch 1024: simulated devices forced onto "
            f"the CPU platform (JAX_PLATFORMS=cpu, {os.cpu_count()} host cores shared)",
            ("devices", "step ms", "over 1 device", "|final loss - 1 device's|"),
            [
                (
                    str(r["devices"]),
                    f"{r['step_ms']:.2f}",
                    f"{r['over_1_device']:.2f}x",
                    f"{r['final_loss_diff']:.1e}",
                )
                for r in out["data_parallel"]
            ],
            left=0,
        )
    )


SECTION = Section("data_parallel", run, render)
