"""Section ``validate``: ``scripts/validate.py`` cold, then again on the same cache folder (and
once more without the checks' executables), and the XLA compilations it makes."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from bench.common import ROOT, Section, cold_env
from bench.render import table

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


def bench_validate(runs: int, args=(), without_executables: bool = False) -> list[dict]:
    """``python scripts/validate.py *args`` under ``JAX_LOG_COMPILES=1``, cold (an empty
    compilation cache folder), then ``runs - 1`` times again on the same cache folder, and
    (``without_executables``) once more with ``--no-executable-cache``: what the checks'
    executables kept whole save a second run, beside XLA's programs alone."""
    env = cold_env(JAX_LOG_COMPILES="1")
    plan = [("cold", args)] + [("again (cache folder kept)", args)] * (runs - 1)
    if without_executables:
        plan.append(("again, --no-executable-cache", (*args, "--no-executable-cache")))
    rows = []
    for label, argv in plan:
        start = time.perf_counter()
        r = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "validate.py"), *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=900,
        )
        rows.append(
            {
                "run": label + (f" {' '.join(args)}" if args else ""),
                "wall_s": time.perf_counter() - start,
                "exit_code": r.returncode,
                **count_compilations(r.stdout + r.stderr),
            }
        )
    return rows


def run(ctx) -> dict:
    # --quick: the lecture's network only (the whole suite is the full run's)
    if ctx.quick:
        return {"validate": bench_validate(1, QUICK_VALIDATE)}
    return {"validate": bench_validate(2, without_executables=True)}


def render(ctx, out: dict) -> None:
    ctx.console.print(
        table(
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
                for r in out["validate"]
            ],
        )
    )


SECTION = Section("validate", run, render)
