"""Benchmark functional_nn: warm ratios taken in one run, and the time to a first result.

Every comparison interleaves the calls (A B A B ...) after a warm-up and reports the median of
the per-round time ratios, which holds to about 2% on a shared machine where separate medians
swing by 10%. A call under a millisecond is timed as K back-to-back calls and one wait for all
of them (one wait per call would time the launch, not the work, on an accelerator). Achieved
GFLOP/s are printed beside the device's measured ``jnp.dot`` peak, sized to saturate the device
and labelled with its matmul precision. Cold figures (compile, first call, the compilations
``scripts/validate.py`` makes) come from fresh processes with an empty compilation cache.
Run it when nothing else runs; every section prints its wall and CPU seconds.

    python scripts/benchmark.py                 # everything (about 13 minutes on 2 cores)
    python scripts/benchmark.py --quick         # smaller sizes, fewer rounds (about 3.5 minutes)
    python scripts/benchmark.py --only peak,methods --json bench.json
    python scripts/benchmark.py --skip validate,sympy

Sections, in order: peak, methods, chain, first_result, checkers_scale, locate, validate, compile,
cost_law, vectorization, training, large_data, memory, data_parallel, sympy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import bench  # scripts/: the sections (and jax_enable_x64, set before any array is made)
from bench.common import Context, machine
from bench.timing import section_seconds
from rich.console import Console


def parse(argv=None) -> tuple[argparse.Namespace, list[str]]:
    """The command line and the sections it selects, in the order they run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer pairs")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--only", help=f"comma-separated sections among: {','.join(bench.NAMES)}")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument("--worker", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    chosen = bench.NAMES if args.only is None else tuple(args.only.split(","))
    skipped = set(filter(None, args.skip.split(",")))
    unknown = (set(chosen) | skipped) - set(bench.NAMES)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose among {', '.join(bench.NAMES)}")
    return args, [s for s in bench.NAMES if s in chosen and s not in skipped]


def main(argv=None) -> int:
    args, selected = parse(argv)
    if args.worker:  # a cold subprocess of this script: print one JSON line
        name, arg = args.worker
        print(json.dumps(bench.WORKERS[name](json.loads(arg))))
        return 0
    console = Console(width=max(Console().width, 150))
    ctx = Context(args.quick, console, machine(console, args.quick))
    seconds, start = {}, time.perf_counter()
    for section in bench.SECTIONS:
        if section.name in selected:
            with section_seconds(section.name, seconds, console):
                entries = section.run(ctx)
                ctx.results.update(entries)
                section.render(ctx, entries)
    total = time.perf_counter() - start
    ctx.results["section_seconds"], ctx.results["total_s"] = seconds, total
    console.print(
        f"total: {total:.0f} s wall; per section: "
        + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in seconds.items())
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(ctx.results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
