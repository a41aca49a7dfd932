"""Section ``checkers_scale``: ``fnn.check_grad`` against ``jax.test_util.check_grads`` on
research-scale models (:mod:`bench.research_models`), each call in a fresh process; the worker
those processes run.

Per model, the two checkers alternate (check_grad, check_grads, check_grad, ...: 3 pairs, 1 with
``--quick``), each in a process of its own with an empty JAX compilation cache and an empty
``XDG_CACHE_HOME`` (the library's executable cache): what a user pays the first time. A worker
reports the call's wall seconds (building the model excluded), the process's peak RSS
(``ru_maxrss``: host memory, the interpreter and JAX included; a GPU's memory is not in it)
and, in the first pair, the verdict on each planted whole-leaf bug: the leaves ``check_grad``
fails, whether ``check_grads`` raises (it checks one random projection and names no leaf).
``check_grads`` gets a planted gradient as a ``jax.custom_vjp`` rule. The table gives the
medians of the per-pair ratios, check_grad over check_grads.

The 10M-parameter transformer runs in the full run only. A worker whose resident memory passes
:data:`MEMORY_CEILING` of the machine's exits, and its row says so: the machine is shared.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

import jax
import jax.test_util

import functional_nn as fnn
from bench.common import Section, cold_env, run_worker
from bench.render import fmt, table
from bench.research_models import MODELS, bug_leaves, plant, size

CHECKERS = ("check_grad", "check_grads")
QUICK_MODELS = ("mlp 256x4", "mlp 512x4", "mlp 256x16", "transformer 1M")
FULL_MODELS = (*QUICK_MODELS, "transformer 10M")
MEMORY_CEILING = 0.5
"""A worker whose resident memory passes this fraction of physical memory exits."""
MEMORY_EXIT = 86  # the exit status of a worker stopped at the ceiling
WORKER_TIMEOUT_S = 900


# -- the worker: one checker, one model, one fresh process -----------------------------------------


def _peak_rss_mb() -> float:
    """The process's peak resident memory so far, MB (``ru_maxrss``: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _watch_memory(fraction: float) -> None:
    """Exit the process (status :data:`MEMORY_EXIT`) once its resident memory passes
    ``fraction`` of physical memory; polled every 50 ms from a daemon thread (Linux only)."""
    if not os.path.exists("/proc/self/statm"):
        return
    page = os.sysconf("SC_PAGE_SIZE")
    limit = fraction * page * os.sysconf("SC_PHYS_PAGES")

    def watch():
        while True:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * page
            if rss > limit:
                sys.stderr.write(
                    f"checkers_scale: resident memory {rss / 2**30:.1f} GiB passed "
                    f"{fraction:.0%} of this machine's {limit / fraction / 2**30:.0f} GiB\n"
                )
                sys.stderr.flush()
                os._exit(MEMORY_EXIT)
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


def _check_grad(f: Callable, params, grad: Callable | None) -> dict:
    """``fnn.check_grad``: ok, and the leaves of its failing rows in tree order."""
    report = fnn.check_grad(f, params, grad=grad)
    failing = list(dict.fromkeys(r.leaf for r in report.failures))
    return {"ok": bool(report.ok), "failing": failing}


def _with_grad(f: Callable, grad: Callable) -> Callable:
    """``f`` with ``grad`` as its reverse rule, for a checker that takes no gradient."""

    @jax.custom_vjp
    def g(params):
        return f(params)

    def fwd(params):
        return f(params), params

    def bwd(params, ct):
        return (jax.tree_util.tree_map(lambda leaf: ct * leaf, grad(params)),)

    g.defvjp(fwd, bwd)
    return g


def _check_grads(f: Callable, params, grad: Callable | None) -> dict:
    """``jax.test_util.check_grads(order=1, modes=["rev"])``: ok, or the first line of its
    AssertionError."""
    g = f if grad is None else _with_grad(f, grad)
    try:
        jax.test_util.check_grads(g, (params,), order=1, modes=["rev"])
    except AssertionError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        return {"ok": False, "error": " ".join(lines[:3])[:200]}
    return {"ok": True}


CHECK = {"check_grad": _check_grad, "check_grads": _check_grads}


def worker_checker(arg) -> dict:
    """In a fresh process: ``arg["checker"]`` on ``MODELS[arg["model"]]``; its seconds (the
    model built before the clock starts), the peak RSS before and after the call and, with
    ``arg["planted"]``, its verdict on each planted bug (after the peak is read)."""
    _watch_memory(MEMORY_CEILING)
    check = CHECK[arg["checker"]]
    f, params = MODELS[arg["model"]]()
    jax.block_until_ready(params)
    P, L = size(params)
    base = _peak_rss_mb()
    start = time.perf_counter()
    verdict = check(f, params, None)
    seconds = time.perf_counter() - start
    out = {"P": P, "leaves": L, "s": seconds, "peak_mb": _peak_rss_mb(), "base_mb": base,
           "verdict": verdict, "platform": jax.default_backend()}  # fmt: skip
    if arg["planted"]:
        out["planted"] = {
            kind: {"leaf": path, **check(f, params, plant(f, params, kind, path))}
            for kind, path in bug_leaves(params).items()
        }
    return out


# -- the section ----------------------------------------------------------------------------------


def cold_run(model: str, checker: str, planted: bool, timeout: float = WORKER_TIMEOUT_S) -> dict:
    """:func:`worker_checker` in a fresh process, JAX's cache and ``XDG_CACHE_HOME`` new empty
    folders (removed after); ``{"error": ...}`` where it failed, timed out or passed the
    memory ceiling."""
    env = cold_env(XDG_CACHE_HOME=tempfile.mkdtemp(prefix="fnn-xdg-"))
    arg = {"model": model, "checker": checker, "planted": planted}
    try:
        return run_worker("checker", arg, env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    except RuntimeError as e:  # the worker's stderr, whose last line says why
        lines = [line for line in str(e).splitlines() if line.strip()]
        return {"error": lines[-1][:200] if lines else "failed"}
    finally:
        for var in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
            shutil.rmtree(env[var], ignore_errors=True)


def bench_model(model: str, pairs: int, checkers=CHECKERS) -> dict:
    """``pairs`` rounds of the ``checkers`` in fresh processes, interleaved; the medians of the
    per-pair ratios, the first checker over the second, where both ran."""
    runs = {c: [] for c in checkers}
    for i in range(pairs):
        for checker in checkers:
            runs[checker].append(cold_run(model, checker, planted=i == 0))
    row = {"model": model, "pairs": pairs, "runs": runs}
    done = [r for rs in runs.values() for r in rs if "error" not in r]
    if done:
        row["P"], row["leaves"] = done[0]["P"], done[0]["leaves"]
    for checker, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        row[checker] = {
            "s": statistics.median(r["s"] for r in ok) if ok else None,
            "peak_mb": statistics.median(r["peak_mb"] for r in ok) if ok else None,
            "ok": all(r["verdict"]["ok"] for r in ok) if ok else None,
            "error": next((r["error"] for r in rs if "error" in r), None),
            "planted": rs[0].get("planted"),
        }
    if len(checkers) == 2:
        both = [
            (a, b)
            for a, b in zip(*runs.values(), strict=True)
            if "error" not in a and "error" not in b
        ]
        for key in ("s", "peak_mb"):
            ratios = [a[key] / b[key] for a, b in both]
            row[f"{key}_ratio"] = statistics.median(ratios) if ratios else None
    return row


def run(ctx) -> dict:
    pairs = 1 if ctx.quick else 3
    models = QUICK_MODELS if ctx.quick else FULL_MODELS
    return {"checkers_scale": [bench_model(m, pairs) for m in models]}


def _verdict(c: dict) -> str:
    if c.get("s") is None:
        return (c.get("error") or "-")[:60]
    return "ok" if c["ok"] else "FAILED"


def _caught(checker: str, v: dict | None) -> str:
    """``named`` where check_grad fails the planted leaf (and which others it fails beside),
    ``raised`` where check_grads raises, ``MISSED`` where the bug passed."""
    if v is None:
        return "-"
    if checker == "check_grads":
        return "raised" if not v["ok"] else "MISSED"
    others = ", ".join(leaf for leaf in v["failing"] if leaf != v["leaf"])
    if v["leaf"] in v["failing"]:
        return "named" + (f", also {others}" if others else "")
    return f"MISSED, failed {others}" if others else "MISSED"


def render(ctx, out: dict) -> None:
    rows = out["checkers_scale"]
    c1, c2 = CHECKERS
    lines = []
    for r in rows:
        a, b = r.get(c1) or {}, r.get(c2) or {}
        lines.append((
            r["model"], fmt(r.get("P"), ",d"), fmt(r.get("leaves"), "d"),
            fmt(a.get("s"), ".2f"), fmt(b.get("s"), ".2f"), fmt(r.get("s_ratio"), ".2f"),
            fmt(a.get("peak_mb"), ".0f"), fmt(b.get("peak_mb"), ".0f"),
            fmt(r.get("peak_mb_ratio"), ".2f"), _verdict(a), _verdict(b),
        ))  # fmt: skip
    ctx.console.print(
        table(
            f"{c1} against jax.test_util.check_grads (order=1, modes=['rev']), float32: each "
            f"call in a fresh process with empty caches, pairs interleaved "
            f"({rows[0]['pairs'] if rows else 0} pair(s)), medians; ratios {c1} / {c2}; peak "
            "RSS includes the interpreter and JAX",
            (
                "model",
                "P",
                "leaves",
                f"{c1} s",
                f"{c2} s",
                "s ratio",
                f"{c1} MB",
                f"{c2} MB",
                "MB ratio",
                c1,
                c2,
            ),  # fmt: skip
            lines,
            left=1,
        )
    )
    bugs = []
    for r in rows:
        planted = {c: (r.get(c) or {}).get("planted") or {} for c in CHECKERS}
        for kind in dict.fromkeys(k for p in planted.values() for k in p):
            leaf = next(p[kind]["leaf"] for p in planted.values() if kind in p)
            bugs.append((r["model"], kind, leaf,
                         *(_caught(c, planted[c].get(kind)) for c in CHECKERS)))  # fmt: skip
    if bugs:
        ctx.console.print(
            table(
                f"planted whole-leaf bugs (first pair): {c1} names the failing leaf, {c2} "
                "raises or not (one random projection, no leaf)",
                ("model", "bug", "planted leaf", c1, c2),
                bugs,
                left=3,
            )
        )


SECTION = Section("checkers_scale", run, render)
