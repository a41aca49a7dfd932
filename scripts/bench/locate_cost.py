"""Section ``locate``: what ``fnn.locate`` costs beside ``fnn.check_grad`` on the scale
benchmark's transformers with one wrong rule (:func:`bench.research_models.ruled_transformer`:
the MLP activation a hand-written ``custom_vjp`` in every block, block 2's backward 5% off).

Each call runs in a fresh process with an empty JAX compilation cache and an empty
``XDG_CACHE_HOME`` (cold, what a user pays the first time), the two alternating: check_grad
(``locate=False``: the check alone), locate, check_grad, ... (1 pair; 2 on the 1M model in
the full run). The table gives each one's seconds, the median ratio locate / check_grad and
what each said: the leaves check_grad fails, and locate's culprits (its call of the site:
``gelu`` call 2 of N is block 2). The bar (issue 35): at most 1x check_grad on the 1M model,
2x on the 10M one (full run only).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time

import jax

import functional_nn as fnn
from bench.common import Section, cold_env, run_worker
from bench.render import fmt, table
from bench.research_models import RULED, size

TOOLS = ("check_grad", "locate")
QUICK_MODELS = ("transformer 1M",)
FULL_MODELS = ("transformer 1M", "transformer 10M")
WORKER_TIMEOUT_S = 1500


def worker_locate(arg) -> dict:
    """In a fresh process: ``arg["tool"]`` on ``RULED[arg["model"]]``, timed from a built
    model; check_grad's failing leaves, or locate's culprits and unit count."""
    f, params = RULED[arg["model"]]()
    jax.block_until_ready(params)
    P, leaves = size(params)
    progress = []
    start = time.perf_counter()
    if arg["tool"] == "check_grad":
        report = fnn.check_grad(f, params, locate=False)
        said = {"ok": bool(report.ok), "failing": len({r.leaf for r in report.failures})}
    else:
        report = fnn.locate(f, params, callback=lambda p: progress.append(p.index))
        said = {
            "ok": bool(report.ok),
            "units": len({(u["where"], u["occurrence"], u["name"]) for u in report.units}),
            "culprits": [f"{c.name} call {c.occurrence + 1} of {c.checked}"
                         for c in report.culprits],
            "progress_calls": len(progress),
        }  # fmt: skip
    return {"P": P, "leaves": leaves, "s": time.perf_counter() - start, **said}


def cold(model: str, tool: str) -> dict:
    env = cold_env(XDG_CACHE_HOME=tempfile.mkdtemp(prefix="fnn-xdg-"))
    try:
        return run_worker("locate", {"model": model, "tool": tool}, env, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"over {WORKER_TIMEOUT_S} s"}
    except RuntimeError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        return {"error": lines[-1][:200] if lines else "failed"}
    finally:
        for var in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
            shutil.rmtree(env[var], ignore_errors=True)


def bench_model(model: str, pairs: int) -> dict:
    runs = {t: [] for t in TOOLS}
    for _ in range(pairs):
        for tool in TOOLS:
            runs[tool].append(cold(model, tool))
    both = [(a, b) for a, b in zip(runs["check_grad"], runs["locate"], strict=True)
            if "error" not in a and "error" not in b]  # fmt: skip
    row = {"model": model, "pairs": pairs, "runs": runs}
    for tool, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        row[tool] = {
            "s": statistics.median(r["s"] for r in ok) if ok else None,
            "error": next((r["error"] for r in rs if "error" in r), None),
            "said": {k: v for k, v in ok[0].items() if k != "s"} if ok else {},
        }
    ratios = [b["s"] / a["s"] for a, b in both]
    row["ratio"] = statistics.median(ratios) if ratios else None
    return row


def run(ctx) -> dict:
    models = QUICK_MODELS if ctx.quick else FULL_MODELS
    return {"locate": [bench_model(m, 1 if ctx.quick or m != "transformer 1M" else 2)
                       for m in models]}  # fmt: skip


def render(ctx, out: dict) -> None:
    lines = []
    for r in out["locate"]:
        a, b = r["check_grad"], r["locate"]
        sa, sb = a["said"], b["said"]
        lines.append((
            r["model"], fmt(sa.get("P"), ",d"),
            fmt(a["s"], ".1f"), fmt(b["s"], ".1f"), fmt(r["ratio"], ".2f"),
            a["error"] or f"fails {sa.get('failing')} of {sa.get('leaves')} leaves",
            b["error"] or f"{sb.get('units')} units; " + ("; ".join(sb.get("culprits", []))
                                                          or "no culprit"),
        ))  # fmt: skip
    ctx.console.print(table(
        "locate beside check_grad on a transformer whose block 2 MLP rule is 5% off: each call "
        "in a fresh process, empty caches; ratio locate / check_grad (bar: 1x at 1M, 2x at 10M)",
        ("model", "P", "check_grad s", "locate s", "ratio", "check_grad says", "locate says"),
        lines, left=1))  # fmt: skip


SECTION = Section("locate", run, render)
