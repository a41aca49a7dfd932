"""Figures for the README and the docs: the eps study (the V-shaped curve), the Taylor picture
of a check (``GradCheckReport.plot``), the cost law, and training: sigmoid against ReLU,
vanishing gradients, a decision boundary, linear against non-linear.

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
import optax  # noqa: E402

import functional_nn as fnn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _save(fig, ax, path: Path, legend: dict | None = None) -> None:
    """Grid, legend, tight layout, PNG, close: how every figure here ends."""
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(**(legend or {}))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    _save(fig, ax, path, legend={"loc": "center left", "fontsize": 8})
    return {k: round(float(v), 2) for k, v in study.orders.items()}


def taylor_check_figure(path: Path) -> dict:
    """``check_grad(...).plot()`` of a right and a wrong gradient: a two-leaf tanh layer
    whose hand-written gradient forgets the tanh' factor in ``b`` (``w`` is right)."""
    x = jax.random.normal(jax.random.key(0), (8, 3))
    params = {"w": jax.random.normal(jax.random.key(1), (3, 2)), "b": jnp.full(2, 0.3)}

    def f(p):
        return jnp.mean(jnp.tanh(x @ p["w"] + p["b"]) ** 2)

    def grad(p):  # right for w, wrong for b: d/db forgets tanh'(z) = 1 - tanh(z)^2
        g = jax.grad(f)(p)
        a = jnp.tanh(x @ p["w"] + p["b"])
        return {"w": g["w"], "b": jnp.mean(2 * a, axis=0) / 2}

    report = fnn.check_grad(f, params, grad=grad)
    fig = report.plot()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {p: round(t.order, 2) for p, t in report.taylor.items()}


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
    _save(fig, ax, path)


def _train(net, loss, ds, steps, lr=1e-2, batch=32, seed=0):
    params = net.init(jax.random.key(seed), jnp.float64)
    return fnn.fit(net, loss, params, ds.x_train, ds.y_train, optax.adam(lr), steps, batch,
                   jax.random.key(seed + 1), reduction="mean")  # fmt: skip


def activations_figure(path: Path) -> None:
    """Training loss of sigmoid against ReLU hidden layers, same task, same everything else."""
    ds = fnn.load_dataset("digits")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for hidden in ("sigmoid", "relu"):
        net = fnn.Network((64, 32, 32, 32, 10), hidden=hidden, output="softmax")
        params, history = _train(net, "cross_entropy", ds, 1500, lr=1e-3, batch=64)
        acc = float((net.apply(params, ds.x_test).argmax(1) == ds.y_test.argmax(1)).mean())
        ax.semilogy(history.loss, label=f"{hidden} hidden layers (test accuracy {acc:.3f})")
    ax.set_xlabel("step (Adam 1e-3, batches of 64)")
    ax.set_ylabel("training loss (mean cross-entropy)")
    ax.set_title("digits, 64-32-32-32-10: sigmoid against ReLU hidden layers")
    _save(fig, ax, path)


def vanishing_gradients_figure(path: Path) -> dict:
    """Per-layer gradient norms at initialisation, 10 hidden layers (the lecture's footnote)."""
    ds = fnn.load_dataset("digits")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ratios = {}
    for hidden in ("sigmoid", "relu"):
        net = fnn.Network((64, *[32] * 10, 10), hidden=hidden, output="softmax")
        params = net.init(jax.random.key(0), jnp.float64)
        _, grads = fnn.backprop(net, "cross_entropy", params, ds.x_train[:256], ds.y_train[:256],
                                reduction="mean")  # fmt: skip
        norms = [float(jnp.linalg.norm(g.W)) for g in grads]
        ratios[hidden] = norms[0] / norms[-1]
        ax.semilogy(range(1, len(norms) + 1), norms, "o-", label=f"{hidden} (layer 1 / layer 11:"
                    f" {ratios[hidden]:.1e})")  # fmt: skip
    ax.set_xlabel("layer l")
    ax.set_ylabel("||dJ/dW(l)|| at initialisation")
    ax.set_title("Vanishing gradients: 10 hidden layers of 32, digits, Glorot / He init")
    _save(fig, ax, path)
    return ratios


def _boundary(ax, net, params, ds, title):
    xx, yy = jnp.meshgrid(jnp.linspace(-2.5, 2.5, 200), jnp.linspace(-2.5, 2.5, 200))
    grid = jnp.stack([xx.ravel(), yy.ravel()], axis=1)
    p = net.apply(params, grid)[:, 0].reshape(xx.shape)
    ax.contourf(xx, yy, p, levels=20, cmap="RdBu_r", alpha=0.6)
    ax.contour(xx, yy, p, levels=[0.5], colors="k", linewidths=1)
    y = ds.y_test[:, 0] > 0.5
    ax.scatter(ds.x_test[y, 0], ds.x_test[y, 1], s=10, c="firebrick", edgecolors="k", lw=0.3)
    ax.scatter(ds.x_test[~y, 0], ds.x_test[~y, 1], s=10, c="steelblue", edgecolors="k", lw=0.3)
    acc = float(((net.apply(params, ds.x_test) > 0.5) == (ds.y_test > 0.5)).mean())
    ax.set_title(f"{title}\ntest accuracy {acc:.3f}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def decision_boundary_figure(path: Path) -> None:
    """A small ReLU network on two moons."""
    ds = fnn.load_dataset("moons")
    net = fnn.Network((2, 16, 16, 1), hidden="relu")
    params, _ = _train(net, "bce", ds, 1500)
    fig, ax = plt.subplots(figsize=(4.4, 4.4))
    _boundary(ax, net, params, ds, "two moons, 2-16-16-1 ReLU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def linear_vs_nonlinear_figure(path: Path) -> None:
    """The lecture's "is an activation necessary?": identity hidden layers on circles."""
    ds = fnn.load_dataset("circles")
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.2))
    for ax, hidden in zip(axes, ("identity", "relu"), strict=True):
        net = fnn.Network((2, 16, 16, 1), hidden=hidden)
        params, _ = _train(net, "bce", ds, 1500)
        _boundary(ax, net, params, ds, f"2-16-16-1, hidden={hidden}")
    fig.suptitle("Without activations the network is one linear map (circles)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="figures", help="folder for the PNGs")
    p.add_argument("--bench", help="JSON written by scripts/benchmark.py --json")
    p.add_argument("--skip-cost", action="store_true", help="no cost-law figure")
    p.add_argument("--only-eps", action="store_true", help="no training figures")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    orders = eps_study_figure(out / "eps_study.png")
    print(f"wrote {out / 'eps_study.png'}; observed orders {orders}")
    taylor = taylor_check_figure(out / "taylor_check.png")
    print(f"wrote {out / 'taylor_check.png'}; Taylor orders {taylor}")
    if not args.only_eps:
        activations_figure(out / "sigmoid_vs_relu.png")
        ratios = vanishing_gradients_figure(out / "vanishing_gradients.png")
        decision_boundary_figure(out / "moons.png")
        linear_vs_nonlinear_figure(out / "circles.png")
        print(f"wrote sigmoid_vs_relu.png, vanishing_gradients.png ({ratios}), moons.png, "
              "circles.png")  # fmt: skip
    if not args.skip_cost:
        if args.bench:
            cost = json.loads(Path(args.bench).read_text())["cost_law"]
        else:
            from bench.cost_law import bench_cost_law

            cost = bench_cost_law(jnp.float32, 64, quick=True)
        cost_law_figure(out / "cost_law.png", cost)
        print(f"wrote {out / 'cost_law.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
