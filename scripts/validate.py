"""Validate every gradient method of functional_nn against jax.grad, in float64.

Runs check_gradients on an embedded suite of the lecture's networks (or on one network given by
options), several seeds and batch sizes each, prints one table with a line per network and
method (its worst error over every leaf and case, the tolerance, the evaluations of J it made,
the verdict), and exits 0 only if no method fails. Entries whose finite-difference step crossed
a ReLU kink are left out and counted ("kink"), neither passed nor failed silently.

    python scripts/validate.py                       # the suite
    python scripts/validate.py --sizes 4,3,2 --hidden relu --output identity --loss mse --bias
    python scripts/validate.py --json out.json
    python scripts/validate.py --jobs 1              # the suite in this process only
    python scripts/validate.py --no-executable-cache # trace every check again

The suite's networks are shared among ``--jobs`` fresh processes (default 2): tracing the
checks' programs is Python, one core per process, and it is most of a cold run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import jax

jax.config.update(
    "jax_enable_x64", True
)  # this process checks in float64; the library never sets it

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import functional_nn as fnn  # noqa: E402
from derivations import MAX_PARAMS, sympy_gradient  # noqa: E402

# the library's methods, and SymPy's closed forms (for networks of at most MAX_PARAMS)
METHODS = {**fnn.default_methods(), "sympy": sympy_gradient}

SUITE = [
    # name, Network kwargs, loss, seeds, batch sizes (None: a single sample (D,))
    ("lecture 4-3-2", dict(sizes=(4, 3, 2), bias=False), "bce", (0, 1, 2), (None, 8, 64)),
    ("logistic regression", dict(sizes=(5, 1)), "bce", (0, 1, 2), (None, 16, 128)),
    ("multi-output logistic", dict(sizes=(6, 3)), "bce", (0, 1), (1, 32)),
    (
        "ReLU regression",
        dict(sizes=(3, 16, 16, 1), hidden="relu", output="identity"),
        "mse",
        (0, 1),
        (1, 32),
    ),
    ("deep sigmoid (6 hidden)", dict(sizes=(5, 8, 8, 8, 8, 8, 8, 2)), "bce", (0, 1), (1, 16)),
]


def make_problem(net: fnn.Network, loss: str, seed: int, batch: int | None):
    """Params from ``net.init`` with non-zero biases, standard-normal x, and y fitting the loss.

    The data come from NumPy: each new shape drawn with ``jax.random`` would compile a
    program of its own, which in a cold process costs more than the checks."""
    params = net.init(jax.random.key(seed), jnp.float64)
    rng = np.random.default_rng(seed)
    if net.bias:
        params = tuple(
            fnn.Layer(W, jnp.asarray(0.5 * rng.standard_normal(b.shape))) for W, b in params
        )
    x_shape = (net.D,) if batch is None else (batch, net.D)
    y_shape = x_shape[:-1] + (net.O,)
    x = jnp.asarray(rng.standard_normal(x_shape))
    if loss == "bce":
        y = jnp.asarray((rng.uniform(size=y_shape) > 0.5).astype(np.float64))
    elif loss == "cross_entropy":  # one-hot rows
        y = jnp.asarray(np.eye(net.O)[rng.integers(0, net.O, size=y_shape[:-1])])
    else:
        y = jnp.asarray(rng.standard_normal(y_shape))
    return params, x, y


def check_network(name, net, loss, seeds, batches, methods, directional=None):
    """check_gradients on every seed and batch size; per method, one summary row: the worst
    error relative to its tolerance over every leaf and case, kinks counted."""
    if net.num_params() > MAX_PARAMS or net.output == "softmax":  # no closed form derived
        methods = {n: m for n, m in methods.items() if m is not sympy_gradient}
    by_method: dict[str, list] = {}
    reports = []
    for seed in seeds:
        for batch in batches:
            params, x, y = make_problem(net, loss, seed, batch)
            report = fnn.check_gradients(
                net, loss, params, x, y, methods=methods, directional=directional, dtype="float64"
            )
            reports.append(report)
            for row in report.rows:
                key = f"{row.method} (directional)" if row.leaf == "directional" else row.method
                by_method.setdefault(key, []).append(row)
    rows = []
    for method, method_rows in by_method.items():
        worst = max(method_rows, key=lambda r: r.error / r.tolerance)
        kinks = sum(r.kinks for r in method_rows)
        failed = any(r.status == "fail" for r in method_rows)
        status = "fail" if failed else ("kink" if kinks else "pass")
        rows.append(
            {
                "network": name,
                "sizes": list(net.sizes),
                "hidden": net.hidden,
                "output": net.output,
                "bias": net.bias,
                "loss": loss,
                "method": method,
                "reference": "autodiff",
                "error": worst.error,
                "worst_leaf": worst.leaf,
                "tolerance": worst.tolerance,
                "evaluations": max(r.evaluations or 0 for r in method_rows),
                "kinks": kinks,
                "status": status,
                "ok": not failed,
                "cases": len(reports),
            }
        )
    return rows, reports


def _start_worker(executables: bool = True) -> None:
    """A process's settings, main's and each worker's (x64 is set at import): compiled programs
    kept on disk, and the checks' executables too unless ``--no-executable-cache``."""
    fnn.use_persistent_cache(executables=executables)  # a second run neither traces nor compiles
    fnn.prefer_fast_compilation()  # small programs, run a few times each


def _check_one(item, methods=None):
    """``check_network`` of one suite entry, here or in a worker process (which imports the
    methods by name); the reports come back as their text."""
    name, kw, loss, seeds, batches, method_names, directional = item
    methods = methods or {m: METHODS[m] for m in method_names}
    with jax.default_matmul_precision("highest"):  # true float products on any device
        rows, reports = check_network(
            name, fnn.Network(**kw), loss, seeds, batches, methods, directional
        )
    return rows, [str(r) for r in reports]


def run_suite(suite, methods, directional, jobs, executables=True):
    """``check_network`` on every network of ``suite``, ``(rows, report texts)`` in its order.

    With ``jobs > 1`` the networks are shared among that many fresh processes: tracing a
    program is Python, one core per process, and it is most of a cold run. The methods must
    then be importable by name (the built-in ones are); the deep network goes first, being the
    longest. ``executables``: keep the checks' executables on disk too."""
    items = [(name, kw, loss, seeds, batches, list(methods), directional)
             for name, kw, loss, seeds, batches in suite]  # fmt: skip
    if jobs <= 1 or len(items) <= 1:
        return [_check_one(item, methods) for item in items]
    order = sorted(range(len(items)), key=lambda i: -fnn.Network(**items[i][1]).num_params())
    context = multiprocessing.get_context("spawn")  # a fresh JAX in each, never a fork of one
    # a worker that dies (XLA aborting on a flag it refuses, say) breaks the pool: an error
    # here, not a wait for its lost network (multiprocessing.Pool would wait for ever)
    pool = ProcessPoolExecutor(
        min(jobs, len(items)), context, initializer=_start_worker, initargs=(executables,)
    )
    try:
        results = {i: pool.submit(_check_one, items[i]) for i in order}
        return [results[i].result() for i in range(len(items))]
    except BrokenProcessPool as error:
        raise WorkerDiedError(
            "validate.py: a worker process died before it finished its networks; run with "
            "--jobs 1 to see what it printed"
        ) from error
    finally:  # Ctrl-C reaches the workers too: nothing to wait for
        pool.shutdown(wait=False, cancel_futures=True)


class WorkerDiedError(RuntimeError):
    """A worker process of :func:`run_suite` ended without its result."""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", help="one network instead of the suite, e.g. 4,3,2")
    p.add_argument("--hidden", default="sigmoid", choices=sorted(fnn.ACTIVATIONS))
    p.add_argument("--output", default="sigmoid", choices=list(fnn.OUTPUT_ACTIVATIONS))
    p.add_argument("--loss", default=None, choices=sorted(fnn.LOSSES))
    p.add_argument("--bias", action="store_true", help="give the network biases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    p.add_argument("--directional", action="store_true", help="force the directional check")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument(
        "--no-executable-cache",
        action="store_true",
        help="keep only XLA's compiled programs on disk, not the checks' whole executables "
        "(a second run then traces every check again)",
    )
    p.add_argument("--verbose", action="store_true", help="print every leaf of every case")
    p.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes sharing the suite's networks (default: 2 on 2 cores or more)",
    )
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        what = f"unknown {unknown}" if unknown else "no method given"
        p.error(f"--methods: {what}; choose from {sorted(METHODS)}")
    if args.batch < 1:
        p.error(f"--batch must be >= 1; got {args.batch}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0; got {args.seed}")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1; got {args.jobs}")
    if not args.sizes:
        given = [f"--{k}" for k in ("hidden", "output", "loss", "bias", "seed", "batch")
                 if getattr(args, k) != p.get_default(k)]  # fmt: skip
        if given:
            p.error(f"{', '.join(given)} describe one network: give it with --sizes too "
                    "(without --sizes the embedded suite runs, with its own settings)")  # fmt: skip
    if args.sizes:  # the one network, checked here: every error before any work
        try:
            sizes = tuple(int(s) for s in args.sizes.split(","))
            args.network = dict(sizes=sizes, hidden=args.hidden, output=args.output, bias=args.bias)
            fnn.Network(**args.network)
        except ValueError as err:
            p.error(f"--sizes {args.sizes!r}: {err}")
        default_loss = {"sigmoid": "bce", "softmax": "cross_entropy"}
        args.loss = args.loss or default_loss.get(args.output, "mse")
        outputs = fnn.get_loss(args.loss).outputs
        if outputs is not None and args.output not in outputs:
            p.error(
                f"--loss {args.loss} needs --output {' or '.join(outputs)}; got --output "
                f"{args.output}"
            )
    if args.json:  # checked before any work, so that nothing is computed for nothing
        folder = Path(args.json).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            p.error(f"--json {args.json}: the folder {folder} does not exist or is not writable")
        if Path(args.json).is_dir():
            p.error(f"--json {args.json}: is a folder; give a file name")
    return p, args


def main(argv=None) -> int:
    """Exit 0: every method agrees; 1: a method disagrees; 2: bad arguments (argparse); 3: a
    worker process died."""
    parser, args = parse_args(argv)
    _start_worker(not args.no_executable_cache)
    if args.sizes:
        suite = [(f"{args.sizes} {args.hidden}", args.network, args.loss, (args.seed,),
                  (args.batch,))]  # fmt: skip
    else:
        suite = SUITE

    console = Console(width=max(Console().width, 132))
    methods = {m: METHODS[m] for m in args.methods}
    start = time.perf_counter()
    # worker processes import the methods by name: only unpatched built-in ones travel
    defaults = {**fnn.default_methods(), "sympy": sympy_gradient}
    builtin = all(defaults.get(m) is method for m, method in methods.items())
    try:
        jobs = args.jobs if builtin else 1
        directional = True if args.directional else None
        results = run_suite(suite, methods, directional, jobs, not args.no_executable_cache)
    except WorkerDiedError as error:
        print(error, file=sys.stderr)
        return 3
    rows = [row for network_rows, _ in results for row in network_rows]
    if args.verbose:
        for _, reports in results:
            for report in reports:
                console.print(report, markup=False, highlight=False)

    table = Table(title=f"functional_nn: every gradient method against autodiff (float64, "
                        f"{jax.devices()[0].platform})")  # fmt: skip
    for col in ("network", "loss", "method", "worst error", "leaf", "tolerance", "evaluations",
                "cases", "verdict"):  # fmt: skip
        right = col in ("worst error", "tolerance", "evaluations", "cases")
        table.add_column(col, justify="right" if right else "left")
    for r in rows:
        verdict = {
            "pass": "[green]pass[/green]",
            "kink": f"[yellow]kink[/yellow] ({r['kinks']} left out)",
            "fail": "[bold red]FAIL[/bold red]",
        }[r["status"]]
        table.add_row(
            r["network"], r["loss"], r["method"], f"{r['error']:.2e}", r["worst_leaf"],
            f"{r['tolerance']:.0e}", str(r["evaluations"]), str(r["cases"]), verdict,
        )  # fmt: skip
    console.print(table)
    ok = all(r["ok"] for r in rows)
    failed = sum(not r["ok"] for r in rows)
    console.print(
        f"{len(rows) - failed} passed, {failed} failed in {time.perf_counter() - start:.1f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ok": ok, "rows": rows}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
