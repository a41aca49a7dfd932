"""Figures for the README: the eps study (the V-shaped curve) and the cost law.

    python scripts/figures.py                      # writes figures/*.png
    python scripts/figures.py --out DIR --bench bench.json

The cost law is read from ``scripts/benchmark.py --json`` output when given, else measured
here with the benchmark's quick settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the eps study needs both arms of the V

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import functional_nn as fnn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def eps_study_figure(path: Path) -> dict:
    """Error of each scheme against autodiff over a log grid of steps, lecture network."""
    net = fnn.Network((4, 3, 2), bias=False)
    kp, kx, ky = jax.random.split(jax.random.key(0), 3)
    params = net.init(kp, jnp.float64)
    x = jax.random.normal(kx, (16, 4), jnp.float64)
    y = (jax.random.uniform(ky, (16, 2)) > 0.5).astype(jnp.float64)
    study = fnn.eps_study(net, "bce", params, x, y)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for scheme, marker in (("forward", "o"), ("central", "s"), ("complex_step", "^")):
        order = study.orders[scheme]
        ax.loglog(study.eps, study.errors[scheme], marker=marker, ms=4,
                  label=f"{scheme} (observed order {order:.2f})")  # fmt: skip
        ax.axvline(
            fnn.default_eps(scheme, "float64"), ls=":", lw=0.8, color=ax.lines[-1].get_color()
        )
    ax.set_xlabel("relative step eps")
    ax.set_ylabel("normwise error against autodiff (worst leaf)")
    ax.set_title("Finite differences on the lecture's 4-3-2 network (float64)\n"
                 "dotted: the default step of each scheme")  # fmt: skip
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="center left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {k: round(float(v), 2) for k, v in study.orders.items()}


def cost_law_figure(path: Path, cost: list[dict]) -> None:
    """Time of each method against P, log-log."""
    P = [r["P"] for r in cost]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.loglog(P, [r["central_ms"] for r in cost], "s-", label="central differences (2P evals)")
    local = [(r["P"], r["local_ms"]) for r in cost if r["local_ms"] is not None]
    ax.loglog(*zip(*local, strict=True), "o-", label="local differences (the lecture's chain)")
    ax.loglog(P, [r["directional16_ms"] for r in cost], "^-", label="directional check, k=16")
    ax.loglog(P, [r["backprop_ms"] for r in cost], "D-", label="backprop")
    ax.set_xlabel("P, number of parameters")
    ax.set_ylabel("time per gradient (ms)")
    ax.set_title(f"The cost law (float32, N={cost[0]['batch']}, {jax.devices()[0].platform})")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="figures", help="folder for the PNGs")
    p.add_argument("--bench", help="JSON written by scripts/benchmark.py --json")
    p.add_argument("--skip-cost", action="store_true", help="only the eps study")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    orders = eps_study_figure(out / "eps_study.png")
    print(f"wrote {out / 'eps_study.png'}; observed orders {orders}")
    if not args.skip_cost:
        if args.bench:
            cost = json.loads(Path(args.bench).read_text())["cost_law"]
        else:
            import benchmark

            cost = benchmark.bench_cost_law(jnp.float32, 64, quick=True)
        cost_law_figure(out / "cost_law.png", cost)
        print(f"wrote {out / 'cost_law.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
