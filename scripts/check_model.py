"""Check the gradient of a research-scale model leaf by leaf, with a progress bar.

``fnn.check_grad`` on a model of ``scripts/bench/research_models.py`` (tanh MLPs, transformer
language models of 1M, 10M and 100M parameters), float32, as research code holds it. The
library prints nothing: it reports its progress through ``check_grad(callback=...)``, and this
script draws it with rich (the leaf, the stage, the evaluations of ``f``). Then the report,
the wall time and the process's peak host memory.

    python scripts/check_model.py                               # transformer 1M
    python scripts/check_model.py --model "transformer 10M" --plant scale
    python scripts/check_model.py --model "transformer 100M"    # on a GPU (gpu_check.sh)
    python scripts/check_model.py --list

``--plant KIND`` swaps in ``jax.grad`` with one whole leaf wrong (sign, scale, transpose,
zero; the leaf of ``research_models.bug_leaves``) and exits 0 only if the report fails that
leaf and no other; without it, exit 0 means the right gradient passed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402
from bench import research_models  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

import functional_nn as fnn  # noqa: E402

MODELS = {
    **research_models.MODELS,
    "transformer 100M": lambda: research_models.transformer(**research_models.TRANSFORMER_100M),
}


def check(model: str, plant: str | None, seed: int, budget_mb: int | None, taylor: bool,
          console: Console) -> dict:  # fmt: skip
    """Build ``model``, check it with a progress bar, print the report; the verdict as a dict."""
    with jax.numpy_rank_promotion("allow"):  # research code broadcasts its biases
        f, params = MODELS[model]()
        P, L = research_models.size(params)
        path = research_models.bug_leaves(params)[plant] if plant else None
        grad = research_models.plant(f, params, plant, path) if plant else None
        planted = f"; planted: {plant} of {path}" if plant else ""
        console.print(f"[bold]{model}[/]: {P:,} parameters in {L} leaves, float32, "
                      f"on {jax.devices()[0].platform}{planted}", soft_wrap=True)  # fmt: skip
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("leaves | {task.fields[stage]} | {task.fields[evals]} evaluations"),
                   TimeElapsedColumn())  # fmt: skip
        start = time.perf_counter()
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("check_grad", total=L, stage="", evals=0)

            def show(p: fnn.Progress) -> None:
                bar.update(task, completed=p.index, stage=f"{p.leaf} {p.stage}",
                           evals=p.evaluations)  # fmt: skip

            budget = None if budget_mb is None else budget_mb * 2**20
            report = fnn.check_grad(f, params, grad=grad, key=jax.random.key(seed),
                                    taylor=taylor, callback=show, memory_budget=budget)  # fmt: skip
            bar.update(task, completed=L)
        seconds = time.perf_counter() - start
    console.print(str(report), markup=False, highlight=False, soft_wrap=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    failing = sorted({r.leaf for r in report.failures})
    ok = failing == [path] if plant else report.ok
    console.print(f"{seconds:.1f} s, peak host memory {peak:.0f} MB; "
                  f"{'as expected' if ok else 'NOT as expected'}")  # fmt: skip
    return {"model": model, "P": P, "leaves": L, "plant": plant, "failing": failing, "ok": ok,
            "seconds": seconds, "peak_rss_mb": peak}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="transformer 1M", help="a name of --list")
    p.add_argument("--plant", choices=research_models.KINDS, help="one whole leaf wrong")
    p.add_argument("--seed", type=int, default=0, help="the directions' key")
    p.add_argument("--budget-mb", type=int, help="check_grad's memory_budget (default 256)")
    p.add_argument("--no-taylor", action="store_true", help="skip the Taylor rows")
    p.add_argument("--json", help="write the verdict here")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    args = p.parse_args(argv)
    console = Console()
    if args.list:
        for name, build in MODELS.items():
            P, L = research_models.size(jax.eval_shape(lambda build=build: build()[1]))
            console.print(f"{name!r}: {P:,} parameters in {L} leaves")
        return 0
    if args.model not in MODELS:
        p.error(f"--model must be one of {sorted(MODELS)}; got {args.model!r}")
    verdict = check(args.model, args.plant, args.seed, args.budget_mb, not args.no_taylor,
                    console)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(verdict, indent=1))
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
