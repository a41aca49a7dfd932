"""What the sections share besides timing: the section's interface, the run's settings, the
problems they time, and the fresh processes the cold figures come from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
from rich.console import Console

import functional_nn as fnn

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "benchmark.py"  # its --worker NAME JSON runs a worker of bench.WORKERS
CHAIN_UP_TO = 2e8  # factor entries a jacobian_chain call materializes, over the whole batch


@dataclass
class Context:
    """What each section's ``run`` and ``render`` get: ``--quick``, the console, the results
    so far (what ``--json`` writes) and ``notes``, figures a section keeps for its renderer
    that are not written."""

    quick: bool
    console: Console
    results: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    dtype = jnp.float32

    @property
    def pairs(self) -> int:
        return 5 if self.quick else 10


@dataclass(frozen=True)
class Section:
    """One table of the benchmark: ``run(ctx)`` measures and returns the entries it adds to
    the results, ``render(ctx, entries)`` prints them."""

    name: str
    run: Callable[[Context], dict]
    render: Callable[[Context, dict], None]


def machine(console, quick: bool) -> dict:
    """Print the device, JAX, the cores and the load (a warning when the machine is busy); the
    results' first entries."""
    device = jax.devices()[0]
    console.print(
        f"device: {device.device_kind} ({device.platform}, {len(jax.devices())} "
        f"device(s)), jax {jax.__version__}, {os.cpu_count()} CPU cores, "
        f"{'--quick' if quick else 'full run'}"
    )
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        console.print(
            f"[yellow]the machine is busy (load {load:.1f} on {os.cpu_count()} cores): times are "
            "inflated, and PyTorch's spinning threads are slowed the most[/]"
        )
    return {
        "load_average": load,
        "device": str(device),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "quick": quick,
    }


def factor_entries(net: fnn.Network) -> int:
    """Entries of one sample's materialized Jacobian factors in ``jacobian_chain``: per layer
    ``dh/dw`` (H_l, H_l H_{l-1}), ``dh/dh_prev`` (H_l, H_{l-1}) and ``dh/dz`` (H_l, H_l), and
    ``dJ/dy_hat`` (1, O)."""
    pairs = zip(net.sizes[1:], net.sizes[:-1], strict=True)
    return sum(o * o * i + o * i + o * o for o, i in pairs) + net.O


def problem(net: fnn.Network, loss: str, batch: int, dtype, seed: int = 0):
    """Params, standard-normal x and targets that fit ``loss`` (0/1, one-hot or real)."""
    kp, kx, ky = jax.random.split(jax.random.key(seed), 3)
    params = net.init(kp, dtype)
    x = jax.random.normal(kx, (batch, net.D), dtype)
    if loss == "bce":
        y = (jax.random.uniform(ky, (batch, net.O)) > 0.5).astype(dtype)
    elif loss == "cross_entropy":
        y = jax.nn.one_hot(jax.random.randint(ky, (batch,), 0, net.O), net.O, dtype=dtype)
    else:
        y = jax.random.normal(ky, (batch, net.O), dtype)
    return params, x, y


def torch_device():
    """``(torch, "cuda" or "cpu")``: the GPU when JAX runs on one; ImportError without torch."""
    import torch

    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch, ("cuda" if gpu else "cpu")


def cold_env(devices: int | None = None, cache: bool = True, **extra) -> dict:
    """The environment of a cold subprocess: JAX's persistent compilation cache pointed at a
    new empty folder (``cache=False``: turned off, as in a user's process, where the library
    never turns it on; a program compiled twice then costs twice); with ``devices``, that many
    simulated devices forced onto the CPU platform (``JAX_PLATFORMS=cpu``,
    ``--xla_force_host_platform_device_count``)."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(prefix="fnn-cold-")}
    if not cache:
        env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    if jax.default_backend() == "gpu":  # this process holds 75% of the GPU's memory already
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if devices is not None:
        flags = [
            f
            for f in env.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
        ]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
        env["JAX_PLATFORMS"] = "cpu"
    return {**env, **extra}


def run_worker(name: str, arg, env: dict, timeout: float = 600) -> dict:
    """Run the worker ``bench.WORKERS[name]`` on ``arg`` in a fresh process (``benchmark.py
    --worker NAME JSON``); its last stdout line is the JSON it returns."""
    cmd = [sys.executable, str(SCRIPT), "--worker", name, json.dumps(arg)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark worker {name!r} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
