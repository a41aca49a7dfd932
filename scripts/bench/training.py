"""Section ``training``: steps per second on breast_cancer, ``fit``'s scan against a Python loop
of jitted steps, scikit-learn and PyTorch eager."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import functional_nn as fnn
from bench.common import Section, torch_device
from bench.render import table
from bench.timing import interleaved, keeping


def bench_training(steps: int, pairs: int) -> dict:
    """Steps per second on breast_cancer, 30-16-1 ReLU, full batch, Adam 1e-3, mean BCE:
    the compiled scan loop of ``fit`` against a Python loop of jitted steps (interleaved), and
    scikit-learn's MLPClassifier and PyTorch (where installed) for the same number of epochs."""
    ds = fnn.load_dataset("breast_cancer")
    x, y = jnp.asarray(ds.x_train, jnp.float32), jnp.asarray(ds.y_train, jnp.float32)
    net = fnn.Network((30, 16, 1), hidden="relu")
    params = net.init(jax.random.key(0), jnp.float32)
    opt = optax.adam(1e-3)

    def scan_fit():
        _, history = fnn.fit(net, "bce", params, x, y, opt, steps, reduction="mean",
                             chunk_size=steps)  # fmt: skip
        return history.loss

    @jax.jit
    def step(params, opt_state):
        J, grads = fnn.backprop(net, "bce", params, x, y, "mean")
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, J

    def python_loop_fit():
        p, s, losses = params, opt.init(params), []
        for _ in range(steps):
            p, s, J = step(p, s)
            losses.append(J)
        return jnp.stack(losses)

    fs = {"scan": scan_fit, "python_loop": python_loop_fit}
    try:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        def sklearn_fit():
            clf = MLPClassifier(
                (16,),
                activation="relu",
                solver="adam",
                alpha=0.0,
                learning_rate_init=1e-3,
                batch_size=x.shape[0],
                max_iter=steps,
                shuffle=False,
                tol=0.0,
                n_iter_no_change=10**9,
                random_state=0,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(np.asarray(x), np.ravel(np.asarray(y)))
            return clf.loss_

        fs["sklearn"] = sklearn_fit
    except ImportError:
        pass
    try:
        torch, dev = torch_device()
    except ImportError:
        pass
    else:
        tensors = [torch.tensor(np.asarray(t), device=dev) for p in params for t in p]
        xt = torch.tensor(np.asarray(x), device=dev)
        yt = torch.tensor(np.asarray(y), device=dev)

        def torch_fit():
            ps = [t.clone().requires_grad_(True) for t in tensors]
            o = torch.optim.Adam(ps, lr=1e-3)
            for _ in range(steps):
                o.zero_grad()
                z = torch.relu(xt @ ps[0].T + ps[1]) @ ps[2].T + ps[3]
                J = torch.nn.functional.binary_cross_entropy_with_logits(z, yt)
                J.backward()
                o.step()
            return float(J.detach())

        fs["torch"] = torch_fit
    last = {}
    r = interleaved(keeping(fs, last), pairs=pairs, max_s=20)
    scan_losses, loop_losses = np.asarray(last["scan"]), np.asarray(last["python_loop"])
    row = {
        "steps": steps,
        "scan_steps_per_s": steps / r["s"]["scan"],
        "python_loop_steps_per_s": steps / r["s"]["python_loop"],
        "scan_speedup": r["ratio"]["python_loop"],
        "loop_max_rel_loss_diff": float(np.max(np.abs(loop_losses - scan_losses) / scan_losses)),
        "final_loss": float(scan_losses[-1]),
    }
    for key, fn in (("sklearn", fs.get("sklearn")), ("torch", fs.get("torch"))):
        row[f"{key}_steps_per_s"] = None if fn is None else steps / r["s"][key]
        if fn is not None:
            row[f"{key}_over_scan"] = r["ratio"][key]
            row[f"{key}_final_loss"] = float(last[key])
    row["torch_threads"] = __import__("torch").get_num_threads() if "torch" in fs else None
    return row


def run(ctx) -> dict:
    return {"training": bench_training(300 if ctx.quick else 1000, 3 if ctx.quick else 5)}


def render(ctx, out: dict) -> None:
    tr = out["training"]
    rows = [
        (
            "fit (one compiled chunk of all steps)",
            f"{tr['scan_steps_per_s']:.0f}",
            "-",
            f"{tr['final_loss']:.6f}",
        ),
        (
            "Python loop of jitted steps",
            f"{tr['python_loop_steps_per_s']:.0f}",
            f"{tr['scan_speedup']:.2f}x",
            f"max rel. diff {tr['loop_max_rel_loss_diff']:.1e}",
        ),
    ]
    torch_name = f"PyTorch eager ({tr.get('torch_threads')} threads)"
    for name, key in (("scikit-learn MLPClassifier", "sklearn"), (torch_name, "torch")):
        if tr.get(f"{key}_steps_per_s") is None:
            rows.append((name, "not installed", "-", "-"))
        else:
            rows.append(
                (
                    name,
                    f"{tr[f'{key}_steps_per_s']:.0f}",
                    f"{tr[f'{key}_over_scan']:.2f}x",
                    f"{tr[f'{key}_final_loss']:.6f}",
                )
            )
    ctx.console.print(
        table(
            f"training steps per second: breast_cancer 30-16-1, full batch, Adam, {tr['steps']} "
            "steps (float32)",
            ("loop", "steps/s", "fit's scan is faster by", "final loss"),
            rows,
        )
    )


SECTION = Section("training", run, render)
