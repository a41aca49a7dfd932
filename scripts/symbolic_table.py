"""The accuracy of jax.nn's activations, optax's elementwise losses and the lecture's functions,
in ULPs over the whole float range (fnn.check_symbolic): value and first derivative.

Per function and dtype: the largest ULP error of the value and of the derivative in each range
of |x| (the bar is 4 ulp plus the conditioning at the point), the number of points where JAX
gives inf, nan or 0 while the exact value is a finite normal number, and the first such point
on each side. Writes docs/_static/symbolic_table.json and, with --figure, the figure of the
docs page (docs/_static/symbolic_ulps.png).

    python scripts/symbolic_table.py                    # float32 and float64, every function
    python scripts/symbolic_table.py --only softplus,gelu_tanh --dtypes float32
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import functional_nn as fnn

ROOT = Path(__file__).resolve().parents[1]


def _huber(x):
    return optax.huber_loss(x, 0.0 * x)


def _log_cosh(x):
    return optax.log_cosh(x, 0.0 * x)


def _sigmoid_bce(x):  # label 1: -log(sigmoid(x)), the loss of a positive example
    return optax.sigmoid_binary_cross_entropy(x, 1.0 + 0.0 * x)


FUNCTIONS = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "log_sigmoid": jax.nn.log_sigmoid,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_erf": lambda x: jax.nn.gelu(x, approximate=False),
    "elu": jax.nn.elu,
    "celu": jax.nn.celu,
    "selu": jax.nn.selu,
    "mish": jax.nn.mish,
    "tanh": jnp.tanh,
    "sparse_plus": jax.nn.sparse_plus,
    "squareplus": jax.nn.squareplus,
    "optax sigmoid_binary_cross_entropy (y=1)": _sigmoid_bce,
    "optax huber_loss": _huber,
    "optax log_cosh": _log_cosh,
    "fnn.sigmoid": fnn.sigmoid,
    "fnn.softplus": fnn.softplus,
}


def measure(name, fn, dtype) -> dict:
    start = time.perf_counter()
    try:
        report = fnn.check_symbolic(fn, dtype=dtype)
    except (ValueError, NotImplementedError, TypeError) as err:
        return {"function": name, "dtype": dtype, "error": str(err).splitlines()[0][:160]}
    worst = {q: max((r.max_ulp for r in report.rows if r.quantity == q), default=0.0)
             for q in ("value", "d1")}  # fmt: skip
    failing = sorted({r.range for r in report.rows if r.failed})
    first = {}
    for f in sorted(report.flags, key=lambda f: abs(f["x"])):
        first.setdefault((f["quantity"], f["x"] > 0), f)
    return {
        "function": name,
        "dtype": dtype,
        "ok": report.ok,
        "value_max_ulp": worst["value"],
        "d1_max_ulp": worst["d1"],
        "failing_ranges": failing,
        "flags": len(report.flags),
        "first_flags": [first[k] for k in sorted(first)],
        "rows": [r.__dict__ for r in report.rows],
        "seconds": time.perf_counter() - start,
        "_report": report,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated names (default: all)")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--figure", action="store_true", help="draw docs/_static/symbolic_ulps.png")
    p.add_argument("--json", default=str(ROOT / "docs" / "_static" / "symbolic_table.json"))
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(FUNCTIONS)
    unknown = [n for n in names if n not in FUNCTIONS]
    if unknown:
        p.error(f"unknown functions {unknown}; known: {', '.join(FUNCTIONS)}")
    results = []
    for dtype in args.dtypes.split(","):
        for name in names:
            r = measure(name, FUNCTIONS[name], dtype)
            results.append(r)
            if "error" in r:
                print(f"{name:44} {dtype:8} not read: {r['error']}")
                continue
            flags = "; ".join(f"{f['quantity']} {f['x']:.4g}: jax {f['jax']:.3g}, exact "
                              f"{f['exact']}" for f in r["first_flags"][:2])  # fmt: skip
            print(f"{name:44} {dtype:8} value {r['value_max_ulp']:9.3g} ulp  d1 "
                  f"{r['d1_max_ulp']:9.3g} ulp  {'ok' if r['ok'] else 'FAILED':6} "
                  f"{','.join(r['failing_ranges'])}  {flags}", flush=True)  # fmt: skip
    out = [{k: v for k, v in r.items() if k != "_report"} for r in results]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        picks = [r for r in results if "_report" in r and r["dtype"] == "float32"
                 and r["function"] in ("sigmoid", "softplus", "tanh", "gelu_tanh")]  # fmt: skip
        fig, axes = plt.subplots(1, len(picks), figsize=(4 * len(picks), 3.2), squeeze=False)
        for ax, r in zip(axes[0], picks, strict=True):
            r["_report"].plot(ax=ax)
            ax.set_title(f"{r['function']}, float32")
        fig.tight_layout()
        fig.savefig(ROOT / "docs" / "_static" / "symbolic_ulps.png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
