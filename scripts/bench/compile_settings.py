"""Section ``compile``: what each of the library's compile settings saves in a fresh process,
each setting on and off in processes of their own, interleaved (on off on off ...), with JAX's
persistent compilation cache off; and what the probes of the running XLA cost."""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp

import functional_nn as fnn
from bench.common import Section, cold_env, problem, run_worker
from bench.library import (
    FAST_COMPILE,
    FAST_XLA_FLAGS,
    fast_compile_options,
    inline_jits,
    supported_compile_options,
    supported_xla_flags,
)
from bench.render import table

SETTINGS = {
    "inline_jits": "trace and lower the five built-in methods (4-3-2, batch 8), nested jits "
    "inlined / not",
    "fast_compile": "XLA compile of those five programs with fast_compile_options() / XLA's "
    "defaults",
}


def _lowered(inline: bool) -> tuple[list, float]:
    """The five built-in methods of check_gradients on the lecture's network, jitted and
    lowered as check_gradients lowers them (inlined or not); the seconds it took."""
    net = fnn.Network((4, 3, 2), bias=False)
    params, x, y = problem(net, "bce", 8, jnp.float64)
    jax.block_until_ready((params, x, y))
    start = time.perf_counter()
    lowered = []
    for method in fnn.default_methods().values():
        jitted = jax.jit(functools.partial(method, net, "bce"))
        if inline:
            with inline_jits():
                lowered.append(jitted.lower(params, x, y))
        else:
            lowered.append(jitted.lower(params, x, y))
    return lowered, time.perf_counter() - start


def worker_compile_setting(arg) -> dict:
    """One setting, on or off, in this fresh process: its seconds."""
    setting, on = arg["setting"], arg["on"]
    if setting == "inline_jits":
        return {"s": _lowered(on)[1]}
    lowered, _ = _lowered(True)
    options = fast_compile_options() if on else None
    start = time.perf_counter()
    for program in lowered:
        program.compile(compiler_options=options)
    return {"s": time.perf_counter() - start}


def worker_probes(arg) -> dict:
    """The probes in a fresh process: compile options (in-process), XLA flags (a child process
    the first time for a jaxlib; read back from ``XDG_CACHE_HOME`` after)."""
    start = time.perf_counter()
    supported_compile_options(FAST_COMPILE)
    options_s = time.perf_counter() - start
    start = time.perf_counter()
    supported_xla_flags(FAST_XLA_FLAGS)
    return {"options_s": options_s, "flags_s": time.perf_counter() - start}


def run(ctx) -> dict:
    pairs = 1 if ctx.quick else 3
    rows = []
    for setting, what in SETTINGS.items():
        times = {True: [], False: []}
        for _ in range(pairs):
            for on in (True, False):
                arg = {"setting": setting, "on": on}
                times[on].append(run_worker("compile_setting", arg, cold_env(cache=False))["s"])
        ratios = [a / b for a, b in zip(times[True], times[False], strict=True)]
        rows.append({"setting": setting, "what": what, "on_s": statistics.median(times[True]),
                     "off_s": statistics.median(times[False]),
                     "ratio": statistics.median(ratios), "pairs": pairs})  # fmt: skip
    xdg = tempfile.mkdtemp(prefix="fnn-xdg-")
    first = run_worker("probes", {}, cold_env(cache=False, XDG_CACHE_HOME=xdg))
    again = run_worker("probes", {}, cold_env(cache=False, XDG_CACHE_HOME=xdg))
    probes = {"compile_options_s": first["options_s"], "xla_flags_first_s": first["flags_s"],
              "xla_flags_again_s": again["flags_s"], "cores": os.cpu_count()}  # fmt: skip
    return {"compile_settings": rows, "probes": probes}


def render(ctx, out: dict) -> None:
    rows = [
        (r["setting"], r["what"], f"{r['on_s']:.3f}", f"{r['off_s']:.3f}", f"{r['ratio']:.2f}")
        for r in out["compile_settings"]
    ]
    p = out["probes"]
    ctx.console.print(
        table(
            f"compile settings, each in fresh processes, on / off interleaved "
            f"({out['compile_settings'][0]['pairs']} pair(s), median), JAX's cache off",
            ("setting", "what is timed", "on s", "off s", "on/off"),
            rows,
            left=2,
        )
    )
    ctx.console.print(
        f"probes: compile options {1e3 * p['compile_options_s']:.0f} ms in-process; XLA flags "
        f"{p['xla_flags_first_s']:.2f} s the first time for this jaxlib (a child process), "
        f"{1e3 * p['xla_flags_again_s']:.1f} ms read back"
    )


SECTION = Section("compile", run, render)
