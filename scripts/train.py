"""Train a network on a dataset, with a progress bar, a checkpoint and a loss plot.

    python scripts/train.py                                   # breast_cancer, 30-16-1, ReLU, Adam
    python scripts/train.py --dataset digits --sizes 64,32,10 --steps 1000
    python scripts/train.py --dataset breast_cancer --sizes 30,16,1 --hidden relu \\
        --optimizer adam --lr 1e-3 --steps 2000 --batch-size 64 --seed 0 \\
        --gradient backprop --save model.npz --plot loss.png
    python scripts/train.py --processes 2                     # 2 processes, jax.distributed

``--processes N`` starts N copies of this script on this host, as ``torchrun`` does, joined by
``jax.distributed.initialize`` (coordinator 127.0.0.1, a free port; gloo collectives on CPU):
each process holds its own share of the training samples (a global array built with
``jax.make_array_from_process_local_data``), ``fit`` trains data-parallel over every device of
every process, process 0 prints, saves and plots. On a cluster, start one process per host
yourself with the coordinator's address (docs/devices.md).

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
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

import functional_nn as fnn
from functional_nn.data import SHAPES

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
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="start this many processes on this host (jax.distributed), each with\n"
        "its share of the samples, data parallel over all their devices",
    )
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
    if args.processes < 1:
        p.error(f"--processes must be >= 1; got {args.processes}")
    if args.processes > 1 and args.devices > 1:
        p.error("--processes uses every device of every process; leave --devices out")
    if args.processes > 1 and args.batch_size % jax.device_count():
        p.error(f"--batch-size {args.batch_size} does not divide by the {jax.device_count()} "
                f"devices of the {args.processes} processes")  # fmt: skip
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


JOIN = ("FNN_COORDINATOR", "FNN_PROCESSES", "FNN_PROCESS_ID")
"""What the launcher tells each process it starts (``--processes``)."""


def launch(n: int, argv: list[str]) -> int:
    """Start ``n`` copies of this script joined through a coordinator on this host; the first
    to fail stops the others (they would wait for it in a collective). Returns the exit code:
    0 when all succeed, else the first failure's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *argv],
            env={**os.environ, JOIN[0]: f"127.0.0.1:{port}", JOIN[1]: str(n), JOIN[2]: str(i)},
        )  # fmt: skip
        for i in range(n)
    ]
    code = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed:
                code = failed[0]
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        code = 130
    for p in procs:
        if p.poll() is None:
            p.terminate() if code else p.wait()
        p.wait()
    return code or next((p.returncode for p in procs if p.returncode), 0)


def join() -> None:
    """In a process the launcher started: join the others before anything touches a device."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(os.environ[JOIN[0]], num_processes=int(os.environ[JOIN[1]]),
                               process_id=int(os.environ[JOIN[2]]))  # fmt: skip


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if JOIN[2] in os.environ:
        join()
    else:
        asked = argparse.ArgumentParser(add_help=False)
        asked.add_argument("--processes", type=int, default=1)
        n = asked.parse_known_args(argv)[0].processes
        if n > 1:
            return launch(n, argv)
    parser, args = parse_args(argv)
    fnn.use_persistent_cache()  # a second run of the same configuration compiles nothing
    console = Console(quiet=jax.process_index() != 0)  # process 0 speaks for all
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
    devices = jax.device_count() if args.processes > 1 else args.devices
    if devices > 1:
        mesh = fnn.data_mesh(jax.devices()[:devices])
        N = ds.x_train.shape[0]
        if N % devices:  # the training set is split along samples: evenly, or not at all
            n = N - N % devices
            ds = ds._replace(x_train=ds.x_train[:n], y_train=ds.y_train[:n])
            console.print(f"{devices} devices: the first {n} of {N} training samples "
                          "(a multiple of the device count)")  # fmt: skip
    x_train, y_train = ds.x_train, ds.y_train
    if args.processes > 1:  # each process holds its own share: global arrays, never gathered
        i, N = jax.process_index(), x_train.shape[0]
        mine = slice(i * N // args.processes, (i + 1) * N // args.processes)
        x_train, y_train = (jax.make_array_from_process_local_data(fnn.sample_sharding(mesh),
                                                                   np.asarray(a[mine]))
                            for a in (ds.x_train, ds.y_train))  # fmt: skip
    k_init, k_shuffle = jax.random.split(jax.random.key(args.seed))
    params = net.init(k_init)
    console.print(
        f"{args.dataset} ({task}): {ds.x_train.shape[0]} train, {ds.x_test.shape[0]} test; "
        f"network {'-'.join(map(str, net.sizes))} {net.hidden}/{net.output}, loss {loss}, "
        f"P={net.num_params()}, {args.optimizer} lr={args.lr}, gradient={args.gradient}, "
        f"{devices} {jax.devices()[0].platform} device(s)"
        + (f" in {args.processes} processes" if args.processes > 1 else "")
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
                net, loss, params, x_train, y_train,
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
    params = jax.tree_util.tree_map(np.asarray, params)  # replicated: every process holds it
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
    if args.plot and jax.process_index() == 0:
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
