"""Benchmark functional_nn: warm ratios taken in one run, and the time to a first result.

Every comparison interleaves the calls (A B A B ...) after a warm-up and reports the median of
the per-round time ratios, which holds to about 2% on a shared machine where separate medians
swing by 10%. A call under a millisecond is timed as K back-to-back calls and one wait for all
of them (one wait per call would time the launch, not the work, on an accelerator). Achieved
GFLOP/s are printed beside the device's measured ``jnp.dot`` peak, sized to saturate the device
and labelled with its matmul precision. Cold figures (compile, first call, the compilations
``scripts/validate.py`` makes) come from fresh processes with an empty compilation cache.
Run it when nothing else runs; every section prints its wall and CPU seconds.

    python scripts/benchmark.py                 # everything (about 3.5 minutes on 2 cores)
    python scripts/benchmark.py --quick         # smaller sizes, fewer rounds (under 2 minutes)
    python scripts/benchmark.py --only peak,methods --json bench.json
    python scripts/benchmark.py --skip validate,sympy

Sections, in order: peak, methods, chain, first_result, validate, cost_law, vectorization,
training, large_data, memory, data_parallel, sympy.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # for the float64 peak; every array here names its dtype

import bench_fit  # noqa: E402  (scripts/: the large-data problem and the hand-written loop)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import functional_nn as fnn  # noqa: E402
from functional_nn.compilation_cache import prefer_fast_compilation  # noqa: E402
from functional_nn.finite_differences import ravel_params, step_sizes  # noqa: E402
from functional_nn.gradcheck import directional_derivatives, random_directions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "peak",
    "methods",
    "chain",
    "first_result",
    "validate",
    "cost_law",
    "vectorization",
    "training",
    "large_data",
    "memory",
    "data_parallel",
    "sympy",
)

# ------------------------------------------------------------------------------------------
# Timing: K back-to-back calls and one wait; interleaved rounds; median of per-round ratios
# ------------------------------------------------------------------------------------------

SUB_MS = 1e-3  # a call shorter than this is timed as K back-to-back calls and one wait
SAMPLE_S = 1e-2  # ... with K chosen so that one timing sample lasts about this long


def _run_k(f, args, k: int = 1) -> float:
    """Seconds per call of ``k`` calls of ``f(*args)`` issued back to back, then one
    ``block_until_ready`` on all their outputs."""
    start = time.perf_counter()
    outs = [f(*args) for _ in range(k)]
    jax.block_until_ready(outs)
    return (time.perf_counter() - start) / k


def calls_per_sample(seconds_per_call: float) -> int:
    """K: 1 for calls of a millisecond or more, else enough calls for a ``SAMPLE_S`` sample."""
    if seconds_per_call >= SUB_MS:
        return 1
    return min(1000, math.ceil(SAMPLE_S / max(seconds_per_call, 1e-7)))


def interleaved(fs: dict, *args, pairs: int = 10, warm: bool = True, max_s: float = 10.0,
                budget_s: float = 0.5, base=None) -> dict:  # fmt: skip
    """Time the callables of ``fs`` in rounds (each round calls every one of them once, in
    order), after one warm-up call each (``warm``: ``True``, ``False`` or the names to warm
    up; an AOT-compiled call too slow to run twice needs none).

    A sub-millisecond call is timed as K back-to-back calls and one wait (:func:`_run_k`).
    Rounds: ``pairs``, raised for fast calls until about ``budget_s`` of timing (at most 50),
    lowered for slow ones to fit ``max_s`` (at least 3, or ``pairs`` if smaller).

    Returns ``{"s": {name: median seconds per call}, "ratio": {name: median over rounds of
    t_name / t_first}, "k": {name: K}, "times": {name: [seconds per call, per round]},
    "rounds": int}``; ``base`` (default the first name) is the base of the ratios.
    """
    names = list(fs)
    for n in names if warm is True else warm or ():
        jax.block_until_ready(fs[n](*args))
    first = {n: _run_k(fs[n], args) for n in names}  # the first sample of a slow call
    for n in names:  # K from the fastest of 6 calls: the first calls of a program are slower
        if first[n] < SUB_MS:
            first[n] = min(first[n], *(_run_k(fs[n], args) for _ in range(5)))
    k = {n: calls_per_sample(first[n]) for n in names}
    round_s = sum(k[n] * first[n] for n in names)
    rounds = max(pairs, min(50, int(budget_s / max(round_s, 1e-9))))
    if rounds * round_s > max_s:
        rounds = max(min(3, pairs), int(max_s / round_s))
    times = {n: ([first[n]] if k[n] == 1 else []) for n in names}
    for r in range(rounds):
        for n in names:
            if r == 0 and k[n] == 1:
                continue  # already timed by the calibration call, in this round's order
            times[n].append(_run_k(fs[n], args, k[n]))
    base_times = times[names[0] if base is None else base]
    return {
        "s": {n: statistics.median(times[n]) for n in names},
        "ratio": {
            n: statistics.median(a / b for a, b in zip(times[n], base_times, strict=True))
            for n in names
        },
        "k": k,
        "times": times,
        "rounds": rounds,
    }


def paired(f_a, f_b, *args, pairs: int = 10, **kw) -> dict:
    """Interleave ``f_a`` and ``f_b`` (A B A B ...) after a warm-up of each: the median time of
    each and the median of the per-pair ratios ``t_a / t_b`` (see :func:`interleaved`)."""
    r = interleaved({"a": f_a, "b": f_b}, *args, pairs=pairs, base="b", **kw)
    return {"a_s": r["s"]["a"], "b_s": r["s"]["b"], "ratio": r["ratio"]["a"]}


def keeping(fs: dict, last: dict) -> dict:
    """``fs`` with each call's output kept in ``last[name]``: the timed calls' results are
    shown, with no extra call to get them."""

    def keep(name, f):
        def kept(*args):
            last[name] = out = f(*args)
            return out

        return kept

    return {n: keep(n, f) for n, f in fs.items()}


def median_time(f, *args, samples: int = 5) -> float:
    """Median seconds per call of ``f(*args)`` after a warm-up (K-batched below 1 ms)."""
    return interleaved({"f": f}, *args, pairs=samples)["s"]["f"]


# ------------------------------------------------------------------------------------------
# The device's matmul peak, sized to saturate it, its precision labelled
# ------------------------------------------------------------------------------------------

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
        t = min(_run_k(dot, (a, b)) for _ in range(2))
        if t >= saturated_s or 2 * n > max_n:
            break
        n *= 2
    # about 0.2 s per sample, with at most 2 GiB of outputs held until the wait
    k = max(1, min(math.ceil(0.2 / t), 2**31 // (n * n * dtype.itemsize)))
    samples = [_run_k(dot, (a, b), k) for _ in range(3)]
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


# ------------------------------------------------------------------------------------------
# Warm value-and-gradient: backprop and jacobian_chain against autodiff
# ------------------------------------------------------------------------------------------

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


CHAIN_UP_TO = 2e8  # factor entries a jacobian_chain call materializes, over the whole batch


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


def memory_bytes(f, *args) -> dict:
    """XLA's own accounting of a compiled call: temporaries, arguments and outputs."""
    m = jax.jit(f).lower(*args).compile().memory_analysis()
    temp, arg, out = m.temp_size_in_bytes, m.argument_size_in_bytes, m.output_size_in_bytes
    return {"temp_bytes": temp, "peak_bytes": temp + arg + out}


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


# ------------------------------------------------------------------------------------------
# Time to first result: fresh processes, empty compilation caches
# ------------------------------------------------------------------------------------------


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
    """Run ``worker_<name>(arg)`` of this script in a fresh process; its last stdout line
    is the JSON it returns."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, json.dumps(arg)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark worker {name!r} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# (label, Network kwargs, loss, batch): small to large; the lecture's network first
FIRST_NETWORKS = [
    ("4-3-2 (lecture)", dict(sizes=(4, 3, 2), bias=False), "bce", 8),
    ("64-32-32-1", dict(sizes=(64, 32, 32, 1), hidden="relu"), "bce", 256),
    (
        "784-256-256-10",
        dict(sizes=(784, 256, 256, 10), hidden="relu", output="softmax"),
        "cross_entropy",
        256,
    ),
]
FIRST_METHODS = (
    "autodiff",
    "backprop",
    "jacobian_chain",
    "finite_differences",
    "complex_step",
    "local_finite_differences",
)
FINITE_DIFFERENCES = ("finite_differences", "complex_step", "local_finite_differences")
FD_UP_TO = 1_000  # the finite-difference methods get cold rows up to this P (validate.py's sizes)
LOCAL_UP_TO = 20_000  # local differences materialize (H_l, H_l H_{l-1}) per sample: not beyond


def _method(name: str):
    return fnn.autodiff if name == "autodiff" else fnn.default_methods()[name]


def first_result_rows(networks, methods) -> list[dict]:
    """Per method and network, in this process: trace and lower, XLA compile, first call (the
    sum of the three and one execution), and the warm call, float32."""
    rows = []
    for label, kw, loss, batch in networks:
        net = fnn.Network(**kw)
        params, x, y = problem(net, loss, batch, jnp.float32)
        jax.block_until_ready((params, x, y))
        P = net.num_params()
        for name in methods:
            if name == "jacobian_chain" and factor_entries(net) * batch > CHAIN_UP_TO:
                continue
            if name in FINITE_DIFFERENCES and P > FD_UP_TO:
                continue
            f = jax.jit(functools.partial(_method(name), net, loss))
            row = {"method": name, "network": label, "P": P, "batch": batch}
            try:
                start = time.perf_counter()
                lowered = f.lower(params, x, y)
                t_lower = time.perf_counter() - start
                compiled = lowered.compile()
                t_compile = time.perf_counter() - start - t_lower
                jax.block_until_ready(compiled(params, x, y))
                t_first = time.perf_counter() - start
            except (ValueError, TypeError) as e:  # a method that refuses this network
                rows.append({**row, "error": str(e).splitlines()[0][:120]})
                continue
            warm = median_time(compiled, params, x, y, samples=3)
            rows.append(
                {
                    **row,
                    "lower_s": t_lower,
                    "compile_s": t_compile,
                    "first_call_s": t_first,
                    "warm_ms": 1e3 * warm,
                }
            )
    return rows


def worker_first_result(arg) -> dict:
    """In a fresh process: first what a user waits for (:func:`first_verdict`), then the cold
    rows of :func:`first_result_rows` (programs of their own: float32, other shapes)."""
    verdict = first_verdict(arg["steps"])
    networks = [n for n in FIRST_NETWORKS if n[0] in arg["networks"]]
    return {"verdict": verdict, "rows": first_result_rows(networks, arg["methods"])}


def worker_first_check(arg) -> dict:
    """:func:`first_check` with ``arg["data"]`` in a fresh process; with ``arg["fast"]`` it
    calls ``prefer_fast_compilation()`` before any computation, as README's "Checking
    gradients" suggests for a first check."""
    if arg["fast"]:
        prefer_fast_compilation()
    return first_check(arg["data"])


def first_verdict(steps: int) -> dict:
    """What a user waits for in a fresh process, after import: the lecture's check (init and
    data included), then ``fit`` with an ``optax.adam(1e-3)`` built in the call, again with a
    fresh equal one, again with the same object."""
    out = first_check()
    out.update(first_fit(steps))
    return out


def first_check(data: str = "numpy") -> dict:
    """The lecture's check, init and data included: first, then again. ``data``: ``"numpy"``
    (``np.random.default_rng``, as README's example) or ``"jax.random"`` (whose samplers JAX
    compiles in the process: about 1.3 s cold on 2 cores, before the library runs)."""
    out = {}
    for seed, attempt in enumerate(("first", "again")):
        start = time.perf_counter()
        net = fnn.Network((4, 3, 2), bias=False)
        if data == "numpy":
            params = net.init(jax.random.key(seed), jnp.float64)
            rng = np.random.default_rng(seed)
            x = rng.normal(size=(8, 4))
            y = (rng.uniform(size=(8, 2)) > 0.5).astype(np.float64)
        else:
            kp, kx, ky = jax.random.split(jax.random.key(seed), 3)
            params = net.init(kp, jnp.float64)
            x = jax.random.normal(kx, (8, 4), jnp.float64)
            y = (jax.random.uniform(ky, (8, 2)) > 0.5).astype(jnp.float64)
        report = fnn.check_gradients(net, "bce", params, x, y)
        out[f"check_{attempt}_s"] = time.perf_counter() - start
        out["check_ok"] = bool(report.ok)
    return out


def first_fit(steps: int) -> dict:
    """``fit`` with an ``optax.adam(1e-3)`` built in the call, again with a fresh equal one,
    again with the same object."""
    out = {}
    ds = fnn.load_dataset("breast_cancer")
    x, y = jnp.asarray(ds.x_train, jnp.float32), jnp.asarray(ds.y_train, jnp.float32)
    net = fnn.Network((30, 16, 1), hidden="relu")
    params = net.init(jax.random.key(0), jnp.float32)
    opt = None
    for attempt in ("first", "fresh_optimizer", "same_optimizer"):
        opt = opt if attempt == "same_optimizer" else optax.adam(1e-3)
        start = time.perf_counter()
        _, history = fnn.fit(net, "bce", params, x, y, opt, steps, reduction="mean")
        out[f"fit_{attempt}_s"] = time.perf_counter() - start
    out["fit_steps"] = steps
    out["fit_final_loss"] = float(history.loss[-1])
    return out


QUICK_VALIDATE = ("--sizes", "4,3,2", "--batch", "8")
COMPILED = re.compile(r"Finished XLA compilation of (.+?) in ([0-9.]+) sec")
CACHE_HIT = "Persistent compilation cache hit"


def count_compilations(log: str) -> dict:
    """From a ``JAX_LOG_COMPILES=1`` log (JAX 0.10): every backend compile logs "Finished XLA
    compilation of NAME in S sec", a persistent-cache hit among them too (it is logged inside
    the same timer) with a "Persistent compilation cache hit" line of its own."""
    found = [(m.group(1), float(m.group(2))) for m in COMPILED.finditer(log)]
    hits = log.count(CACHE_HIT)
    slowest = sorted(found, key=lambda f: -f[1])[:3]
    return {
        "compilations": len(found) - hits,
        "cache_hits": hits,
        "compile_s": sum(s for _, s in found),
        "lowerings": len(re.findall(r"^.*Compiling \S+ with global shapes", log, re.M)),
        "slowest": [f"{name} {s:.1f} s" for name, s in slowest],
    }


def bench_validate(runs: int, args=()) -> list[dict]:
    """``python scripts/validate.py *args`` under ``JAX_LOG_COMPILES=1``, cold (an empty
    compilation cache folder), then ``runs - 1`` times again on the same cache folder."""
    env = cold_env(JAX_LOG_COMPILES="1")
    rows = []
    for run in range(runs):
        start = time.perf_counter()
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "validate.py"), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=900,
        )
        rows.append(
            {
                "run": ("cold" if run == 0 else "again (cache folder kept)")
                + (f" {' '.join(args)}" if args else ""),
                "wall_s": time.perf_counter() - start,
                "exit_code": r.returncode,
                **count_compilations(r.stdout + r.stderr),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------
# The cost law and vectorization of finite differences
# ------------------------------------------------------------------------------------------

# (P label, sizes): networks of about 10^2 .. 10^5 parameters for the cost law
COST_LAW = [
    ("1e2", (8, 8, 4)),
    ("1e3", (32, 24, 8)),
    ("1e4", (100, 90, 10)),
    ("1e5", (300, 300, 30)),
]
CENTRAL_UP_TO = 20_000  # central differences: 2P evaluations
ONE_ROUND_ABOVE = 5_000  # bigger rows: compiled ahead, one round of timing


def _central(net, loss, chunk_size=None):
    """Jitted central differences of the objective, ``(params, x, y) -> grads``."""
    J = fnn.objective(net, loss)

    def grad(params, x, y):
        return fnn.finite_difference_grad(lambda q: J(q, x, y), params, chunk_size=chunk_size)

    return jax.jit(grad)


def _directional(net, loss, v):
    return jax.jit(lambda p, x, y: directional_derivatives(net, loss, p, x, y, v))


def bench_cost_law(dtype, batch: int, quick: bool) -> list[dict]:
    """Central, local and directional differences against backprop, as P grows.

    Each time is taken in interleaved rounds with backprop, so every ratio is taken in the
    same run; FD / (P x backprop) is the lecture's claim made visible. Above
    ``ONE_ROUND_ABOVE`` parameters, central and local differences (seconds a call) are
    compiled ahead and run once, against the median backprop of the same row (their ratios
    are in the thousands, far above the noise); central differences stop at ``CENTRAL_UP_TO``
    (2P = 2e5 evaluations at 1e5 would take minutes, and their ratio to P backprops holds
    from 1e3 to 1e4), local differences at ``LOCAL_UP_TO``.
    """
    rows = []
    for _, sizes in COST_LAW[:2] if quick else COST_LAW:
        net = fnn.Network(sizes, hidden="tanh")
        params, x, y = problem(net, "bce", batch, dtype)
        P = net.num_params()
        v = random_directions(params, 16, jax.random.key(1))
        fs = {
            "backprop": jax.jit(functools.partial(fnn.backprop, net, "bce")),
            "directional": _directional(net, "bce", v),
        }
        if P <= CENTRAL_UP_TO:
            fs["central"] = _central(net, "bce")
        if P <= LOCAL_UP_TO:
            fs["local"] = jax.jit(functools.partial(fnn.local_finite_differences, net, "bce"))
        if P <= ONE_ROUND_ABOVE:
            r = interleaved(fs, params, x, y, pairs=3, max_s=8)
        else:  # backprop and directional interleaved; the slow ones compiled ahead, run once
            slow = {n: fs.pop(n).lower(params, x, y).compile() for n in ("central", "local")
                    if n in fs}  # fmt: skip
            r = interleaved(fs, params, x, y, pairs=5)
            for n, f in slow.items():
                r["s"][n] = _run_k(f, (params, x, y))
                r["ratio"][n] = r["s"][n] / r["s"]["backprop"]
            fs.update(slow)
        rows.append(
            {
                "P": P,
                "sizes": list(sizes),
                "batch": batch,
                "rounds": r["rounds"],
                "backprop_ms": 1e3 * r["s"]["backprop"],
                "central_ms": 1e3 * r["s"]["central"] if "central" in fs else None,
                "central_over_P_backprop": r["ratio"]["central"] / P if "central" in fs else None,
                "directional16_ms": 1e3 * r["s"]["directional"],
                "directional16_over_backprop": r["ratio"]["directional"],
                "local_ms": 1e3 * r["s"]["local"] if "local" in fs else None,
                "local_over_backprop": r["ratio"]["local"] if "local" in fs else None,
            }
        )
    return rows


LOOP_COLUMNS = 256  # the Python loop is timed over this many columns and scaled to P


def python_loop(net, loss, params, x, y, columns: int = LOOP_COLUMNS):
    """Central differences as a user's Python loop of jitted single evaluations: 2 calls per
    column, over the first ``columns`` columns (each column costs the same)."""
    J = fnn.objective(net, loss)
    theta, unravel = ravel_params(params)
    h = step_sizes(theta, "central", fnn.default_eps("central", theta.dtype))  # theta +- h exact
    one = jax.jit(lambda t: J(unravel(t), x, y))

    def loop(*_):
        return [
            (one(theta.at[i].add(h[i])) - one(theta.at[i].add(-h[i]))) / (2 * h[i])
            for i in range(min(columns, theta.shape[0]))
        ]

    return loop


def bench_vectorization(dtype, batch: int, quick: bool) -> list[dict]:
    """Vmapped chunks of directions against a Python loop of jitted single evaluations, and
    the chunk size: central differences, same problem, interleaved. The loop is timed over
    ``LOOP_COLUMNS`` columns and scaled to all P (its cost per column does not depend on P);
    rows above ``ONE_ROUND_ABOVE`` parameters get one round."""
    rows = []
    chunks = (32,) if quick else (1, 8, 32, 128)
    for _, sizes in COST_LAW[:2] if quick else COST_LAW[:3]:
        net = fnn.Network(sizes, hidden="tanh")
        params, x, y = problem(net, "bce", batch, dtype)
        P = net.num_params()
        cols = min(P, LOOP_COLUMNS)
        fs = {"loop": python_loop(net, "bce", params, x, y, cols)}
        if P <= ONE_ROUND_ABOVE:
            fs.update({c: _central(net, "bce", chunk_size=c) for c in chunks})
            r = interleaved(fs, params, x, y, pairs=1 if quick else 3, max_s=6)
        else:  # the chunked programs compiled ahead, one round
            fs.update({c: _central(net, "bce", c).lower(params, x, y).compile() for c in chunks})
            r = interleaved(fs, params, x, y, pairs=1, warm=("loop",))
        scale = P / cols
        row = {"P": P, "loop_columns_timed": cols, "loop_ms": 1e3 * scale * r["s"]["loop"]}
        for c in chunks:
            row[f"chunk{c}_ms"] = 1e3 * r["s"][c]
            row[f"loop_over_chunk{c}"] = scale / r["ratio"][c]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------
# Training: breast_cancer steps per second; the large-data pipeline
# ------------------------------------------------------------------------------------------


def _torch_device():
    import torch

    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch, ("cuda" if gpu else "cpu")


def bench_training(steps: int, pairs: int) -> dict:
    """Steps per second on breast_cancer, 30-16-1 ReLU, full batch, Adam 1e-3, mean BCE:
    the compiled scan loop of ``fit`` against a Python loop of jitted steps (interleaved), and
    scikit-learn's MLPClassifier and PyTorch (where installed) for the same number of epochs."""
    ds = fnn.load_dataset("breast_cancer")
    x, y = jnp.asarray(ds.x_train, jnp.float32), jnp.asarray(ds.y_train, jnp.float32)
    net = fnn.Network((30, 16, 1), hidden="relu")
    params = net.init(jax.random.key(0), jnp.float32)
    opt = optax.adam(1e-3)

    def scan_fit():
        _, history = fnn.fit(net, "bce", params, x, y, opt, steps, reduction="mean",
                             chunk_size=steps)  # fmt: skip
        return history.loss

    @jax.jit
    def step(params, opt_state):
        J, grads = fnn.backprop(net, "bce", params, x, y, "mean")
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, J

    def python_loop_fit():
        p, s, losses = params, opt.init(params), []
        for _ in range(steps):
            p, s, J = step(p, s)
            losses.append(J)
        return jnp.stack(losses)

    fs = {"scan": scan_fit, "python_loop": python_loop_fit}
    try:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        def sklearn_fit():
            clf = MLPClassifier(
                (16,),
                activation="relu",
                solver="adam",
                alpha=0.0,
                learning_rate_init=1e-3,
                batch_size=x.shape[0],
                max_iter=steps,
                shuffle=False,
                tol=0.0,
                n_iter_no_change=10**9,
                random_state=0,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(np.asarray(x), np.ravel(np.asarray(y)))
            return clf.loss_

        fs["sklearn"] = sklearn_fit
    except ImportError:
        pass
    try:
        torch, dev = _torch_device()
    except ImportError:
        pass
    else:
        tensors = [torch.tensor(np.asarray(t), device=dev) for p in params for t in p]
        xt = torch.tensor(np.asarray(x), device=dev)
        yt = torch.tensor(np.asarray(y), device=dev)

        def torch_fit():
            ps = [t.clone().requires_grad_(True) for t in tensors]
            o = torch.optim.Adam(ps, lr=1e-3)
            for _ in range(steps):
                o.zero_grad()
                z = torch.relu(xt @ ps[0].T + ps[1]) @ ps[2].T + ps[3]
                J = torch.nn.functional.binary_cross_entropy_with_logits(z, yt)
                J.backward()
                o.step()
            return float(J.detach())

        fs["torch"] = torch_fit
    last = {}
    r = interleaved(keeping(fs, last), pairs=pairs, max_s=20)
    scan_losses, loop_losses = np.asarray(last["scan"]), np.asarray(last["python_loop"])
    row = {
        "steps": steps,
        "scan_steps_per_s": steps / r["s"]["scan"],
        "python_loop_steps_per_s": steps / r["s"]["python_loop"],
        "scan_speedup": r["ratio"]["python_loop"],
        "loop_max_rel_loss_diff": float(np.max(np.abs(loop_losses - scan_losses) / scan_losses)),
        "final_loss": float(scan_losses[-1]),
    }
    for key, fn in (("sklearn", fs.get("sklearn")), ("torch", fs.get("torch"))):
        row[f"{key}_steps_per_s"] = None if fn is None else steps / r["s"][key]
        if fn is not None:
            row[f"{key}_over_scan"] = r["ratio"][key]
            row[f"{key}_final_loss"] = float(last[key])
    row["torch_threads"] = __import__("torch").get_num_threads() if "torch" in fs else None
    return row


def torch_fit_fn(params, x, y, steps: int, batch_size: int, lr: float):
    """PyTorch eager, the same network (ReLU hidden, softmax output through the fused cross
    entropy), Adam, one ``randperm`` per epoch; on the GPU when JAX runs on one."""
    torch, dev = _torch_device()
    tensors = [
        (torch.tensor(np.asarray(p.W), device=dev), torch.tensor(np.asarray(p.b), device=dev))
        for p in params
    ]
    xt = torch.tensor(np.asarray(x), device=dev)
    labels = torch.tensor(np.asarray(y).argmax(1), device=dev)
    N = xt.shape[0]

    def run():
        layers = [
            (W.clone().requires_grad_(True), b.clone().requires_grad_(True)) for W, b in tensors
        ]
        opt = torch.optim.Adam([t for layer in layers for t in layer], lr=lr)
        gen = torch.Generator(device=dev).manual_seed(0)
        perm = None
        for t in range(steps):
            start = (t * batch_size) % (N - N % batch_size)
            if start == 0:
                perm = torch.randperm(N, device=dev, generator=gen)
            idx = perm[start : start + batch_size]
            h = xt[idx]
            for l, (W, b) in enumerate(layers):
                h = h @ W.T + b
                if l < len(layers) - 1:
                    h = torch.relu(h)
            J = torch.nn.functional.cross_entropy(h, labels[idx])
            opt.zero_grad(set_to_none=True)
            J.backward()
            opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        return float(J.detach())

    return run


def bench_large_data(
    N: int,
    steps: int,
    pairs: int,
    batch_size: int = 128,
    sizes=bench_fit.SIZES,
    max_s: float = 90,
    torch: bool = True,
) -> dict:
    """784-256-256-10 ReLU/softmax on N synthetic samples, batch 128, Adam 1e-3, mean
    cross-entropy: ``fit`` (its defaults otherwise) against the loop a JAX user writes by
    hand and PyTorch eager, interleaved after a warm-up, median of per-round ratios. The data
    and the hand-written loop are ``scripts/bench_fit.py``'s, the reference of fit's target."""
    net, params, x, y = bench_fit.problem(N, sizes)
    opt = optax.adam(1e-3)
    key = jax.random.key(1)
    hand = bench_fit.hand_written_scan(net, "cross_entropy", opt, steps, batch_size)

    def by_hand():
        return hand(params, x, y, key)[1]

    def by_fit():
        _, history = fnn.fit(
            net, "cross_entropy", params, x, y, opt, steps, batch_size, key, reduction="mean"
        )
        return history.loss

    fs = {"handwritten": by_hand, "fit": by_fit}
    threads = None
    try:
        if torch:
            fs["torch"] = torch_fit_fn(params, x, y, steps, batch_size, 1e-3)
            threads = __import__("torch").get_num_threads()
    except ImportError:
        pass
    last = {}  # each loop's losses, kept from the timed calls
    r = interleaved(keeping(fs, last), pairs=pairs, max_s=max_s)
    return {
        "N": N,
        "sizes": list(sizes),
        "batch": batch_size,
        "steps": steps,
        "rounds": r["rounds"],
        "handwritten_s": r["s"]["handwritten"],
        "fit_s": r["s"]["fit"],
        "fit_over_handwritten": r["ratio"]["fit"],
        "torch_s": r["s"].get("torch"),
        "torch_over_handwritten": r["ratio"].get("torch"),
        "torch_threads": threads,
        "handwritten_final_loss": float(last["handwritten"][-1]),
        "fit_final_loss": float(last["fit"][-1]),
        "torch_final_loss": last.get("torch"),
    }


# ------------------------------------------------------------------------------------------
# Memory, simulated devices, SymPy
# ------------------------------------------------------------------------------------------


def bench_jacobian_chain_memory() -> dict:
    """XLA's peak for jacobian_chain on 784-256-10 at batch 1024, float32 (the chunk bound)."""
    net = fnn.Network((784, 256, 10), hidden="relu", output="softmax")
    params, x, y = problem(net, "cross_entropy", 1024, jnp.float32)
    chain = memory_bytes(functools.partial(fnn.jacobian_chain, net, "cross_entropy"), params, x, y)
    auto = memory_bytes(functools.partial(fnn.autodiff, net, "cross_entropy"), params, x, y)
    return {"network": "784-256-10", "batch": 1024, "jacobian_chain": chain, "autodiff": auto}


def worker_data_parallel(arg) -> dict:
    """A fit step of 784-256-256-10 at batch 1024 over every device of this process."""
    from functional_nn.parallel import data_mesh

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


# ------------------------------------------------------------------------------------------
# Printing
# ------------------------------------------------------------------------------------------


def _table(title: str, columns, rows, left: int = 1) -> Table:
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i < left else "right")
    for r in rows:
        t.add_row(*r)
    return t


def _f(v, fmt: str, none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def show_peaks(console, peaks):
    rows = [(p["dtype"], p["precision"], str(p["n"]), f"{p['gflops']:.1f}") for p in peaks]
    console.print(
        _table(
            "jnp.dot peak (square n x n, K back-to-back calls, one wait)",
            ("dtype", "matmul precision", "n", "GFLOP/s"),
            rows,
            left=2,
        )
    )
    console.print(f"  {PRECISION_NOTE}")


def show_methods(console, methods, peak):
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
            _f(r["jacobian_chain_over_autodiff"], ".1f", f"- ({r['jacobian_chain_note']})"),
        )
        for r in methods
    ]
    console.print(
        _table(
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


def show_first_result(console, rows, verdict, validate):
    if rows:
        console.print(
            _table(
                "time to first result: a fresh process, no persistent compilation cache (float32)",
                (
                    "method",
                    "network",
                    "P",
                    "trace+lower s",
                    "XLA compile s",
                    "first call s",
                    "warm ms",
                    "first / warm",
                ),
                [
                    (r["method"], r["network"], str(r["P"]))
                    + (
                        ("-", "-", r["error"], "-", "-")
                        if "error" in r
                        else (
                            f"{r['lower_s']:.2f}",
                            f"{r['compile_s']:.2f}",
                            f"{r['first_call_s']:.2f}",
                            f"{r['warm_ms']:.3f}",
                            f"{1e3 * r['first_call_s'] / r['warm_ms']:.0f}x",
                        )
                    )
                    for r in rows
                ],
                left=2,
            )
        )
    if verdict:
        v = verdict
        console.print(
            f"check_gradients, lecture 4-3-2, fresh process after import (init and data "
            f"included): NumPy data first {v['check_first_s']:.2f} s, again "
            f"{v['check_again_s']:.2f} s ({'ok' if v['check_ok'] else 'FAILED'})"
            + (
                f"; jax.random data first {v['check_jax_random_first_s']:.2f} s "
                f"({v['check_jax_random_fast_first_s']:.2f} s calling "
                "prefer_fast_compilation() first)"
                if "check_jax_random_first_s" in v
                else ""
            )
            + "\n"
            f"fit 30-16-1 breast_cancer, {v['fit_steps']} steps, optax.adam(1e-3) built in the "
            f"call: first {v['fit_first_s']:.2f} s, again with a fresh equal optimizer "
            f"{v['fit_fresh_optimizer_s']:.2f} s, again with the same object "
            f"{v['fit_same_optimizer_s']:.2f} s"
        )
    if validate:
        console.print(
            _table(
                "python scripts/validate.py under JAX_LOG_COMPILES=1, JAX_COMPILATION_CACHE_DIR "
                "an empty folder",
                (
                    "run",
                    "wall s",
                    "XLA compilations",
                    "persistent-cache hits",
                    "compile s (hits too)",
                    "exit",
                    "slowest compilations",
                ),
                [
                    (
                        r["run"],
                        f"{r['wall_s']:.1f}",
                        str(r["compilations"]),
                        str(r["cache_hits"]),
                        f"{r['compile_s']:.1f}",
                        str(r["exit_code"]),
                        "; ".join(r["slowest"]),
                    )
                    for r in validate
                ],
            )
        )


def show_cost_law(console, cost):
    rows = [
        (
            str(r["P"]),
            f"{r['backprop_ms']:.3f}",
            _f(r["central_ms"], ".1f", f"- (2P = {2 * r['P']:.0e} evaluations)"),
            _f(r["central_over_P_backprop"], ".2f"),
            _f(r["local_ms"], ".1f"),
            _f(r["local_over_backprop"], ".0f"),
            f"{r['directional16_ms']:.2f}",
            f"{r['directional16_over_backprop']:.1f}",
        )
        for r in cost
    ]
    console.print(
        _table(
            "the cost law: finite differences against back-propagation (float32, N=64)",
            (
                "P",
                "backprop ms",
                "central ms",
                "central / (P x backprop)",
                "local ms",
                "local / backprop",
                "directional k=16 ms",
                "directional / backprop",
            ),
            rows,
            left=0,
        )
    )


def show_vectorization(console, vec):
    cols = [k for k in vec[0] if k.startswith("loop_over_chunk")]
    console.print(
        _table(
            f"central differences: Python loop of jitted evaluations / vmapped chunks (the loop "
            f"timed over {LOOP_COLUMNS} columns, scaled to P)",
            ("P", "loop ms", *(f"chunk {k.removeprefix('loop_over_chunk')}" for k in cols)),
            [(str(r["P"]), f"{r['loop_ms']:.1f}", *(f"{r[k]:.1f}x" for k in cols)) for r in vec],
            left=0,
        )
    )


def show_training(console, tr):
    rows = [
        (
            "fit (one compiled chunk of all steps)",
            f"{tr['scan_steps_per_s']:.0f}",
            "-",
            f"{tr['final_loss']:.6f}",
        ),
        (
            "Python loop of jitted steps",
            f"{tr['python_loop_steps_per_s']:.0f}",
            f"{tr['scan_speedup']:.2f}x",
            f"max rel. diff {tr['loop_max_rel_loss_diff']:.1e}",
        ),
    ]
    torch_name = f"PyTorch eager ({tr.get('torch_threads')} threads)"
    for name, key in (("scikit-learn MLPClassifier", "sklearn"), (torch_name, "torch")):
        if tr.get(f"{key}_steps_per_s") is None:
            rows.append((name, "not installed", "-", "-"))
        else:
            rows.append(
                (
                    name,
                    f"{tr[f'{key}_steps_per_s']:.0f}",
                    f"{tr[f'{key}_over_scan']:.2f}x",
                    f"{tr[f'{key}_final_loss']:.6f}",
                )
            )
    console.print(
        _table(
            f"training steps per second: breast_cancer 30-16-1, full batch, Adam, {tr['steps']} "
            "steps (float32)",
            ("loop", "steps/s", "fit's scan is faster by", "final loss"),
            rows,
        )
    )


def show_large_data(console, ld):
    rows = [
        (
            "hand-written: one jitted lax.scan, value_and_grad + optax",
            f"{ld['handwritten_s']:.2f}",
            "1.00",
            f"{ld['handwritten_final_loss']:.4f}",
        ),
        (
            "fnn.fit (batch_size=128, key)",
            f"{ld['fit_s']:.2f}",
            f"{ld['fit_over_handwritten']:.2f}",
            f"{ld['fit_final_loss']:.4f}",
        ),
        (
            f"PyTorch eager ({ld['torch_threads']} threads)" if ld["torch_threads"] else "PyTorch",
            _f(ld["torch_s"], ".2f", "not installed"),
            _f(ld["torch_over_handwritten"], ".2f"),
            _f(ld["torch_final_loss"], ".4f"),
        ),
    ]
    console.print(
        _table(
            f"large data: {ld['N']:,} x {ld['sizes'][0]} synthetic samples, "
            f"{'-'.join(map(str, ld['sizes']))} ReLU/softmax, batch "
            f"{ld['batch']}, Adam 1e-3, {ld['steps']} steps (float32; median of {ld['rounds']} "
            "interleaved rounds)",
            ("loop", "seconds", "over hand-written", "final loss"),
            rows,
        )
    )


def show_data_parallel(console, dp):
    console.print(
        _table(
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
                for r in dp
            ],
            left=0,
        )
    )


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


class Sections:
    """Runs the selected sections and records the wall and CPU seconds of each (children
    included: the cold subprocesses)."""

    def __init__(self, selected, console):
        self.selected, self.console, self.seconds = selected, console, {}

    def __contains__(self, name):
        return name in self.selected

    @contextlib.contextmanager
    def timed(self, name):
        def cpu():
            return sum(
                resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
                for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            )

        wall, cpu0 = time.perf_counter(), cpu()
        yield
        self.seconds[name] = {"wall_s": time.perf_counter() - wall, "cpu_s": cpu() - cpu0}
        s = self.seconds[name]
        self.console.print(f"[dim]\\[{name}: {s['wall_s']:.1f} s wall, {s['cpu_s']:.1f} s CPU][/]")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer pairs")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--only", help=f"comma-separated sections among: {','.join(SECTIONS)}")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument("--worker", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:  # a cold subprocess of this script: print one JSON line
        name, arg = args.worker
        print(json.dumps(globals()[f"worker_{name}"](json.loads(arg))))
        return 0
    chosen = SECTIONS if args.only is None else tuple(args.only.split(","))
    skipped = set(filter(None, args.skip.split(",")))
    unknown = (set(chosen) | skipped) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose among {', '.join(SECTIONS)}")
    quick = args.quick
    pairs = 5 if quick else 10
    console = Console(width=max(Console().width, 150))
    run = Sections([s for s in chosen if s not in skipped], console)
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
    result = {
        "load_average": load,
        "device": str(device),
        "device_kind": device.device_kind,
        "platform": device.platform,
        "jax": jax.__version__,
        "quick": quick,
    }
    start = time.perf_counter()

    dtype = jnp.float32
    peak = None
    if "peak" in run:
        with run.timed("peak"):
            result["dot_peaks"] = bench_peaks(quick)
            show_peaks(console, result["dot_peaks"])
        peak = next(
            p["gflops"]
            for p in result["dot_peaks"]
            if p["dtype"] == "float32" and p["precision"] != "highest"
        )
    if "methods" in run:
        with run.timed("methods"):
            peak = peak or dot_peak(jnp.float32)["gflops"]
            nets = NETWORKS[:2] if quick else NETWORKS
            result["methods"] = bench_methods(nets, dtype, pairs, chain=not quick)
            show_methods(console, result["methods"], peak)
    if "chain" in run:
        with run.timed("chain"):
            chain = result["jacobian_chain"] = bench_jacobian_chain(dtype, pairs)
            console.print(
                f"jacobian_chain, {chain['network']}, batch {chain['batch']}: "
                f"{chain['jacobian_chain_ms']:.3f} ms ({chain['jacobian_chain_over_autodiff']:.2f}x"
                f" autodiff), peak memory {chain['jacobian_chain_peak_bytes'] / 2**10:.0f} KiB "
                f"(autodiff {chain['autodiff_peak_bytes'] / 2**10:.0f} KiB)"
            )
    if "first_result" in run:
        with run.timed("first_result"):
            nets = (
                [FIRST_NETWORKS[0][0], FIRST_NETWORKS[2][0]]
                if quick
                else [n[0] for n in FIRST_NETWORKS]
            )
            arg = {"networks": nets, "methods": FIRST_METHODS, "steps": 1000}
            cold = run_worker("first_result", arg, cold_env(cache=False))
            result["first_verdict"], result["first_result"] = cold["verdict"], cold["rows"]
            for fast in (False, True):
                arg = {"data": "jax.random", "fast": fast}
                first = run_worker("first_check", arg, cold_env(cache=False))["check_first_s"]
                key = "check_jax_random_fast_first_s" if fast else "check_jax_random_first_s"
                result["first_verdict"][key] = first
            show_first_result(console, result["first_result"], result["first_verdict"], None)
    if "validate" in run:
        with run.timed("validate"):
            # --quick: the lecture's network only (the whole suite is the full run's)
            result["validate"] = bench_validate(1, QUICK_VALIDATE) if quick else bench_validate(2)
            show_first_result(console, [], None, result["validate"])
    if "cost_law" in run:
        with run.timed("cost_law"):
            result["cost_law"] = bench_cost_law(dtype, 64, quick)
            show_cost_law(console, result["cost_law"])
    if "vectorization" in run:
        with run.timed("vectorization"):
            result["vectorization"] = bench_vectorization(dtype, 64, quick)
            show_vectorization(console, result["vectorization"])
    if "training" in run:
        with run.timed("training"):
            result["training"] = bench_training(300 if quick else 1000, 3 if quick else 5)
            show_training(console, result["training"])
    if "large_data" in run:
        with run.timed("large_data"):
            steps, rounds = (100, 3) if quick else (400, 5)
            result["large_data"] = bench_large_data(60_000, steps, rounds)
            show_large_data(console, result["large_data"])
    if "memory" in run:
        with run.timed("memory"):
            mem = result["jacobian_chain_memory"] = bench_jacobian_chain_memory()
            console.print(
                f"jacobian_chain, 784-256-10, batch 1024, float32: peak "
                f"{mem['jacobian_chain']['peak_bytes'] / 2**20:.0f} MiB (autodiff "
                f"{mem['autodiff']['peak_bytes'] / 2**20:.1f} MiB)"
            )
    if "data_parallel" in run:
        with run.timed("data_parallel"):
            devices = (1, 2) if quick else (1, 2, 4)
            result["data_parallel"] = bench_data_parallel(10 if quick else 20, devices)
            show_data_parallel(console, result["data_parallel"])
    if "sympy" in run:
        with run.timed("sympy"):
            sym = result["sympy"] = bench_sympy(quick)
            console.print(
                "sympy_gradient, derivation + lambdify + first jitted call: "
                + ", ".join(
                    f"P={r['P']} ({'-'.join(map(str, r['sizes']))}) {r['first_call_s']:.2f} s"
                    for r in sym
                )
            )
    total = time.perf_counter() - start
    result["section_seconds"], result["total_s"] = run.seconds, total
    console.print(
        f"total: {total:.0f} s wall; per section: "
        + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in run.seconds.items())
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
