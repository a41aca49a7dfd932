"""Train a network on a dataset, with a progress bar, a checkpoint and a loss plot.

    python scripts/train.py                                   # breast_cancer, 30-16-1, ReLU, Adam
    python scripts/train.py --dataset digits --sizes 64,32,10 --steps 1000
    python scripts/train.py --dataset breast_cancer --sizes 30,16,1 --hidden relu \\
        --optimizer adam --lr 1e-3 --steps 2000 --batch-size 64 --seed 0 \\
        --gradient backprop --save model.npz --plot loss.png

The output activation and the loss follow the task: sigmoid and BCE (binary), softmax and
cross-entropy (digits), identity and MSE (regression).

Exit codes: 0 trained; 1 training failed (an error, or a NaN or infinite training loss: the
line says at which step; nothing is saved); 2 bad arguments, output paths included (a missing
folder for --save or --plot), found before any work; 130 interrupted by Ctrl-C (the steps done
are kept: the model is saved and reported as usual).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

import functional_nn as fnn
from functional_nn.compilation_cache import use_persistent_cache
from functional_nn.data import SHAPES
from functional_nn.parallel import data_mesh

TASKS = {
    "binary": ("sigmoid", "bce"),
    "multiclass": ("softmax", "cross_entropy"),
    "regression": ("identity", "mse"),
}
OPTIMIZERS = {
    "sgd": fnn.gradient_descent,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adam": optax.adam,
    "rmsprop": optax.rmsprop,
}
GRADIENTS = {
    "backprop": fnn.backprop,
    "autodiff": fnn.autodiff,
    "jacobian_chain": fnn.jacobian_chain,
    "finite_differences": fnn.finite_differences,
    "complex_step": fnn.complex_step,
    "local_finite_differences": fnn.local_finite_differences,
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="breast_cancer", choices=list(fnn.DATASETS))
    p.add_argument("--sizes", help="layer widths D,H_1,...,O (default: D,16,O of the dataset)")
    p.add_argument("--hidden", default="relu", choices=sorted(fnn.ACTIVATIONS))
    p.add_argument("--optimizer", default="adam", choices=list(OPTIMIZERS))
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (> 0)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64, help="0 for full batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gradient", default="backprop", choices=list(GRADIENTS))
    p.add_argument("--reduction", default="mean", choices=["sum", "mean"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--devices", type=int, default=1,
                   help="data parallel over this many devices (simulate CPU devices with\n"
                        "XLA_FLAGS=--xla_force_host_platform_device_count=N)")  # fmt: skip
    p.add_argument("--save", metavar="PATH", help="write a checkpoint (.npz)")
    p.add_argument("--plot", metavar="PATH", help="write the loss curve (.png)")
    args = p.parse_args(argv)
    D, O = SHAPES[args.dataset]
    if args.sizes is None:
        args.sizes = (D, 16, O)
    else:
        try:
            args.sizes = tuple(int(s) for s in args.sizes.split(","))
        except ValueError:
            p.error(f"--sizes must be comma-separated ints, e.g. {D},16,{O}; got {args.sizes!r}")
        if len(args.sizes) < 2 or min(args.sizes) < 1:
            p.error(f"--sizes needs at least two positive widths; got {args.sizes}")
        if args.sizes[0] != D:
            p.error(f"--sizes starts with {args.sizes[0]} but {args.dataset} has D={D} features")
        if args.sizes[-1] != O:
            p.error(f"--sizes ends with {args.sizes[-1]} but {args.dataset} needs O={O} outputs")
    if not (args.lr > 0 and np.isfinite(args.lr)):
        p.error(f"--lr must be > 0; got {args.lr}")
    if args.steps < 1:
        p.error(f"--steps must be >= 1; got {args.steps}")
    if args.batch_size < 0:
        p.error(f"--batch-size must be >= 0 (0: full batch); got {args.batch_size}")
    if not (args.weight_decay >= 0 and np.isfinite(args.weight_decay)):
        p.error(f"--weight-decay must be a finite number >= 0; got {args.weight_decay}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0; got {args.seed}")
    if args.devices < 1:
        p.error(f"--devices must be >= 1; got {args.devices}")
    available = len(jax.devices())
    if not 1 <= args.devices <= available:
        flag = f"XLA_FLAGS=--xla_force_host_platform_device_count={args.devices}"
        p.error(f"--devices {args.devices}: JAX sees {available} device(s); on a CPU, simulate "
                f"more with {flag}")  # fmt: skip
    if args.devices > 1 and args.batch_size % args.devices:
        p.error(f"--batch-size {args.batch_size} does not divide by --devices {args.devices}")
    for flag, path in (("--save", args.save), ("--plot", args.plot)):
        if path is not None:
            problem = output_problem(path)
            if problem:
                p.error(f"{flag} {path}: {problem}")
    if args.plot is not None and Path(args.plot).suffix.lower().lstrip(".") not in PLOT_FORMATS:
        p.error(f"--plot {args.plot}: the file name must end in one of "
                f"{', '.join('.' + f for f in PLOT_FORMATS)}")  # fmt: skip
    if args.save and args.plot and Path(args.save).resolve() == Path(args.plot).resolve():
        p.error(f"--save and --plot name the same file {args.save}; the plot would overwrite "
                "the checkpoint")  # fmt: skip
    return p, args


PLOT_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")
"""What matplotlib's savefig writes, by file name suffix."""


def output_problem(path: str) -> str | None:
    """Why ``path`` cannot be written (checked before any work), or ``None``."""
    target = Path(path)
    if target.is_dir():
        return "is a folder; give a file name"
    folder = target.parent
    if not folder.is_dir():
        return f"the folder {str(folder)!r} does not exist; create it first"
    if not os.access(folder, os.W_OK):
        return f"the folder {str(folder)!r} is not writable"
    if target.exists() and not os.access(target, os.W_OK):
        return "exists and is not writable"
    return None


def metrics(task, net, params, x, y) -> dict:
    y_hat = np.asarray(net.apply(params, x))
    y = np.asarray(y)
    if task == "binary":
        return {"accuracy": float(np.mean((y_hat > 0.5) == (y > 0.5)))}
    if task == "multiclass":
        return {"accuracy": float(np.mean(y_hat.argmax(1) == y.argmax(1)))}
    rmse = float(np.sqrt(np.mean((y_hat - y) ** 2)))
    r2 = 1 - float(np.sum((y_hat - y) ** 2) / np.sum((y - y.mean()) ** 2))
    return {"R2": r2, "RMSE": rmse}


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    use_persistent_cache()  # a second run of the same configuration compiles nothing
    console = Console()
    task = fnn.DATASETS[args.dataset]
    output, loss = TASKS[task]
    net = fnn.Network(args.sizes, hidden=args.hidden, output=output)
    ds = fnn.load_dataset(args.dataset, jax.random.key(args.seed))
    N = ds.x_train.shape[0]
    if args.batch_size > N:
        parser.error(f"--batch-size {args.batch_size} is more than the {N} training samples of "
                     f"{args.dataset}; use at most {N}, or 0 for full batch")  # fmt: skip
    batch = None if args.batch_size == 0 else args.batch_size
    mesh = None
    if args.devices > 1:
        mesh = data_mesh(jax.devices()[: args.devices])
        N = ds.x_train.shape[0]
        if N % args.devices:  # the training set is split along samples: evenly, or not at all
            n = N - N % args.devices
            ds = ds._replace(x_train=ds.x_train[:n], y_train=ds.y_train[:n])
            console.print(f"{args.devices} devices: the first {n} of {N} training samples "
                          "(a multiple of the device count)")  # fmt: skip
    k_init, k_shuffle = jax.random.split(jax.random.key(args.seed))
    params = net.init(k_init)
    console.print(
        f"{args.dataset} ({task}): {ds.x_train.shape[0]} train, {ds.x_test.shape[0]} test; "
        f"network {'-'.join(map(str, net.sizes))} {net.hidden}/{net.output}, loss {loss}, "
        f"P={net.num_params()}, {args.optimizer} lr={args.lr}, gradient={args.gradient}, "
        f"{args.devices} {jax.devices()[0].platform} device(s)"
    )
    columns = [TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn()]  # fmt: skip
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("train", total=args.steps, loss="-")

        def report(step, last_loss):
            progress.update(bar, completed=step, loss=f"{last_loss:.4g}")

        start = time.perf_counter()
        try:
            params, history = fnn.fit(
                net, loss, params, ds.x_train, ds.y_train,
                optimizer=OPTIMIZERS[args.optimizer](args.lr), steps=args.steps,
                batch_size=batch, key=k_shuffle, gradient=GRADIENTS[args.gradient],
                reduction=args.reduction, weight_decay=args.weight_decay,
                chunk_size=max(1, min(100, args.steps // 20)), callback=report, mesh=mesh,
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 (the script's one line, then exit 1)
            progress.stop()
            console.print(f"[red]training failed:[/red] {type(err).__name__}: {err}")
            return 1
        seconds = time.perf_counter() - start
    if history.stop_reason == "non_finite":
        last = f"{history.loss[-1]:.4g}" if history.steps else "none"
        console.print(
            f"[red]training stopped at step {history.non_finite_step}: the training loss is "
            f"not finite[/red] (last finite loss {last}); try a smaller --lr. Nothing saved."
        )
        return 1
    if history.stop_reason == "interrupted":
        console.print(f"interrupted after {history.steps} of {args.steps} steps; keeping them")
        if not history.steps:
            return 130
    train, test = (
        metrics(task, net, params, ds.x_train, ds.y_train),
        metrics(task, net, params, ds.x_test, ds.y_test),
    )
    fmt = ", ".join
    console.print(f"final training loss {history.loss[-1]:.6g}")
    console.print(f"train: {fmt(f'{k} {v:.4f}' for k, v in train.items())}")
    console.print(f"test:  {fmt(f'{k} {v:.4f}' for k, v in test.items())}")
    console.print(f"{1e3 * seconds / history.steps:.3f} ms per step ({history.steps} steps, "
                  f"{seconds:.2f} s, compile included)")  # fmt: skip
    if args.save:
        path = fnn.save(args.save, net, params)
        console.print(f"wrote {path}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.semilogy(history.loss)
        ax.set_xlabel("step")
        ax.set_ylabel(f"training loss ({args.reduction} {loss})")
        ax.set_title(f"{args.dataset}: {'-'.join(map(str, net.sizes))} {net.hidden}, "
                     f"{args.optimizer} lr={args.lr}")  # fmt: skip
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        plt.close(fig)
        console.print(f"wrote {args.plot}")
    return 130 if history.stop_reason == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
