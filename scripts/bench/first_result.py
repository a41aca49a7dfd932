"""Section ``first_result``: the time to a first result, in fresh processes with JAX's
persistent compilation cache off; the workers those processes run."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import functional_nn as fnn
from bench.common import CHAIN_UP_TO, Section, cold_env, factor_entries, problem, run_worker
from bench.library import prefer_fast_compilation
from bench.render import table
from bench.timing import median_time

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
    calls ``prefer_fast_compilation()`` before any computation, as the checker guide
    (docs/checking.md) suggests for a first check."""
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


def run(ctx) -> dict:
    nets = (
        [FIRST_NETWORKS[0][0], FIRST_NETWORKS[2][0]]
        if ctx.quick
        else [n[0] for n in FIRST_NETWORKS]
    )
    arg = {"networks": nets, "methods": FIRST_METHODS, "steps": 1000}
    cold = run_worker("first_result", arg, cold_env(cache=False))
    verdict = cold["verdict"]
    for fast in (False, True):
        arg = {"data": "jax.random", "fast": fast}
        first = run_worker("first_check", arg, cold_env(cache=False))["check_first_s"]
        key = "check_jax_random_fast_first_s" if fast else "check_jax_random_first_s"
        verdict[key] = first
    return {"first_verdict": verdict, "first_result": cold["rows"]}


def cold_row(r: dict) -> tuple:
    """A row of the first-result table: the error where the method refused the network."""
    if "error" in r:
        return (r["method"], r["network"], str(r["P"]), "-", "-", r["error"], "-", "-")
    return (
        r["method"],
        r["network"],
        str(r["P"]),
        f"{r['lower_s']:.2f}",
        f"{r['compile_s']:.2f}",
        f"{r['first_call_s']:.2f}",
        f"{r['warm_ms']:.3f}",
        f"{1e3 * r['first_call_s'] / r['warm_ms']:.0f}x",
    )


def render(ctx, out: dict) -> None:
    rows, v = out["first_result"], out["first_verdict"]
    if rows:
        ctx.console.print(
            table(
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
                [cold_row(r) for r in rows],
                left=2,
            )
        )
    if v:
        ctx.console.print(
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


SECTION = Section("first_result", run, render)
