"""Run the checkers over the float ops of JAX's own lax autodiff tests (scripts/bench/lax_ops.py).

Right ops must pass (no false failure), planted VJP bugs (one argument's cotangent 5% off in
float32, 1% in float64, or zeroed) must fail on the planted argument's leaf alone; ``locate``
must name a planted bug alone, at its line and argument, and find no culprit among the
equations of a right program. Prints one
row per op and dtype, every wrong verdict in full, and exits 1 if there is one.

    python scripts/lax_suite.py                 # 3 seeds, both dtypes, the three checkers
    python scripts/lax_suite.py --seeds 1 --ops sinh,max --dtypes float32
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import jax

jax.config.update("jax_enable_x64", True)  # the float64 cases; float32 ones ask for it

from bench import lax_ops  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of right code (default 3)")
    parser.add_argument("--ops", default="", help="comma-separated op names (default: all)")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--checkers", default=",".join(lax_ops.CHECKERS),
                        help="comma-separated, among check_grad, check_vjp, locate")  # fmt: skip
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.ops.split(",") if n.strip()]
    unknown = [n for n in names if n not in lax_ops.BY_NAME]
    if unknown:
        parser.error(f"unknown ops {unknown}; known: {sorted(lax_ops.BY_NAME)}")
    dtypes = tuple(d.strip() for d in args.dtypes.split(","))
    if any(d not in lax_ops.DTYPES for d in dtypes) or args.seeds < 1:
        parser.error(f"--dtypes from {lax_ops.DTYPES}, --seeds at least 1")
    ops = [lax_ops.BY_NAME[n] for n in names] if names else lax_ops.OPS
    seeds = tuple(range(args.seeds))
    checkers = tuple(c.strip() for c in args.checkers.split(",") if c.strip())
    if not checkers or any(c not in lax_ops.CHECKERS for c in checkers):
        parser.error(f"--checkers from {lax_ops.CHECKERS}")
    specs = list(lax_ops.cases(ops, dtypes, seeds, checkers=checkers))
    console = Console(width=160)
    results = []
    start = time.perf_counter()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("lax ops", total=len(specs))
        for spec in specs:
            results.append(lax_ops.run_case(*spec))
            bar.update(task, advance=1, description=f"{spec[0].name} {spec[1]}")
    seconds = time.perf_counter() - start

    table = Table(title=f"the lax op table: {len(results)} checks, {seconds:.0f} s")
    for col in ("op", "dtype", "right code passed", "plants caught and located", "seconds"):
        table.add_column(col)
    groups = defaultdict(list)
    for c in results:
        groups[(c.op, c.dtype)].append(c)
    for (op, dtype), cs in groups.items():  # every checker of the op and dtype
        right = [c for c in cs if not c.plant]
        plant = [c for c in cs if c.plant]
        table.add_row(
            op, dtype,
            f"{sum(c.right for c in right)}/{len(right)}",
            f"{sum(c.right for c in plant)}/{len(plant)}" if plant else "-",
            f"{sum(c.seconds for c in cs):.1f}",
        )  # fmt: skip
    console.print(table)
    wrong = [c for c in results if not c.right]
    right_code = [c for c in results if not c.plant]
    planted = [c for c in results if c.plant]
    false_failures = sum(not c.right for c in right_code)
    missed = sum(not c.right for c in planted)
    console.print(
        f"false failures: {false_failures} of {len(right_code)} checks of right ops; "
        f"plants missed or mislocated: {missed} of {len(planted)}"
    )
    for checker in checkers:
        mine = [c for c in results if c.checker == checker]
        right_ones = [c for c in mine if not c.plant]
        console.print(
            f"  {checker}: {sum(not c.right for c in right_ones)} false of {len(right_ones)}, "
            f"{sum(not c.right for c in mine if c.plant)} plants missed of "
            f"{len(mine) - len(right_ones)}, {sum(c.seconds for c in mine):.0f} s"
        )
    for c in wrong:
        what = "false failure" if not c.plant else f"plant {c.plant}: failing {c.failing}"
        console.print(f"\n[bold red]{c.op} {c.dtype} seed {c.seed} {c.checker}: {what}[/]")
        console.print(c.report, markup=False, highlight=False)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
