"""Section ``large_data``: ``fit`` on 60,000 synthetic samples against the loop a JAX user
writes by hand (``scripts/bench_fit.py``'s) and PyTorch eager."""

from __future__ import annotations

import bench_fit  # scripts/: the large-data problem and the hand-written loop
import jax
import numpy as np
import optax

import functional_nn as fnn
from bench.common import Section, torch_device
from bench.render import fmt, table
from bench.timing import interleaved, keeping


def torch_fit_fn(params, x, y, steps: int, batch_size: int, lr: float):
    """PyTorch eager, the same network (ReLU hidden, softmax output through the fused cross
    entropy), Adam, one ``randperm`` per epoch; on the GPU when JAX runs on one."""
    torch, dev = torch_device()
    tensors = [
        (torch.tensor(np.asarray(p.W), device=dev), torch.tensor(np.asarray(p.b), device=dev))
        for p in params
    ]
    xt = torch.tensor(np.asarray(x), device=dev)
    labels = torch.tensor(np.asarray(y).argmax(1), device=dev)
    N = xt.shape[0]

    def run():
        layers = [
            (W.clone().requires_grad_(True), b.clone().requires_grad_(True)) for W, b in tensors
        ]
        opt = torch.optim.Adam([t for layer in layers for t in layer], lr=lr)
        gen = torch.Generator(device=dev).manual_seed(0)
        perm = None
        for t in range(steps):
            start = (t * batch_size) % (N - N % batch_size)
            if start == 0:
                perm = torch.randperm(N, device=dev, generator=gen)
            idx = perm[start : start + batch_size]
            h = xt[idx]
            for l, (W, b) in enumerate(layers):
                h = h @ W.T + b
                if l < len(layers) - 1:
                    h = torch.relu(h)
            J = torch.nn.functional.cross_entropy(h, labels[idx])
            opt.zero_grad(set_to_none=True)
            J.backward()
            opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        return float(J.detach())

    return run


def bench_large_data(
    N: int,
    steps: int,
    pairs: int,
    batch_size: int = 128,
    sizes=bench_fit.SIZES,
    max_s: float = 90,
    torch: bool = True,
) -> dict:
    """784-256-256-10 ReLU/softmax on N synthetic samples, batch 128, Adam 1e-3, mean
    cross-entropy: ``fit`` (its defaults otherwise) against the loop a JAX user writes by
    hand and PyTorch eager, interleaved after a warm-up, median of per-round ratios. The data
    and the hand-written loop are ``scripts/bench_fit.py``'s, the reference of fit's target."""
    net, params, x, y = bench_fit.problem(N, sizes)
    opt = optax.adam(1e-3)
    key = jax.random.key(1)
    hand = bench_fit.hand_written_scan(net, "cross_entropy", opt, steps, batch_size)

    def by_hand():
        return hand(params, x, y, key)[1]

    def by_fit():
        _, history = fnn.fit(
            net, "cross_entropy", params, x, y, opt, steps, batch_size, key, reduction="mean"
        )
        return history.loss

    fs = {"handwritten": by_hand, "fit": by_fit}
    threads = None
    try:
        if torch:
            fs["torch"] = torch_fit_fn(params, x, y, steps, batch_size, 1e-3)
            threads = __import__("torch").get_num_threads()
    except ImportError:
        pass
    last = {}  # each loop's losses, kept from the timed calls
    r = interleaved(keeping(fs, last), pairs=pairs, max_s=max_s)
    return {
        "N": N,
        "sizes": list(sizes),
        "batch": batch_size,
        "steps": steps,
        "rounds": r["rounds"],
        "handwritten_s": r["s"]["handwritten"],
        "fit_s": r["s"]["fit"],
        "fit_over_handwritten": r["ratio"]["fit"],
        "torch_s": r["s"].get("torch"),
        "torch_over_handwritten": r["ratio"].get("torch"),
        "torch_threads": threads,
        "handwritten_final_loss": float(last["handwritten"][-1]),
        "fit_final_loss": float(last["fit"][-1]),
        "torch_final_loss": last.get("torch"),
    }


def run(ctx) -> dict:
    steps, rounds = (100, 3) if ctx.quick else (400, 5)
    return {"large_data": bench_large_data(60_000, steps, rounds)}


def render(ctx, out: dict) -> None:
    ld = out["large_data"]
    rows = [
        (
            "hand-written: one jitted lax.scan, value_and_grad + optax",
            f"{ld['handwritten_s']:.2f}",
            "1.00",
            f"{ld['handwritten_final_loss']:.4f}",
        ),
        (
            "fnn.fit (batch_size=128, key)",
            f"{ld['fit_s']:.2f}",
            f"{ld['fit_over_handwritten']:.2f}",
            f"{ld['fit_final_loss']:.4f}",
        ),
        (
            f"PyTorch eager ({ld['torch_threads']} threads)" if ld["torch_threads"] else "PyTorch",
            fmt(ld["torch_s"], ".2f", "not installed"),
            fmt(ld["torch_over_handwritten"], ".2f"),
            fmt(ld["torch_final_loss"], ".4f"),
        ),
    ]
    ctx.console.print(
        table(
            f"large data: {ld['N']:,} x {ld['sizes'][0]} synthetic samples, "
            f"{'-'.join(map(str, ld['sizes']))} ReLU/softmax, batch "
            f"{ld['batch']}, Adam 1e-3, {ld['steps']} steps (float32; median of {ld['rounds']} "
            "interleaved rounds)",
            ("loop", "seconds", "over hand-written", "final loss"),
            rows,
        )
    )


SECTION = Section("large_data", run, render)
