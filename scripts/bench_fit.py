"""fit on large data against the loop a JAX user writes by hand (and PyTorch eager, if installed).

    python scripts/bench_fit.py                 # 60,000 x 784, 784-256-256-10, batch 128, Adam
    python scripts/bench_fit.py --steps 100 --pairs 3 --samples 6000

The pieces are functions for ``scripts/benchmark.py`` to import: :func:`problem` builds the
synthetic data set, :func:`hand_written_scan` the reference loop, :func:`fit_against_scan`
times both warm, interleaved (A B A B ...), and gives the median ratio; :func:`torch_eager`
the same steps in PyTorch (``None`` without torch).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import functional_nn as fnn

SIZES = (784, 256, 256, 10)


def problem(samples: int = 60_000, sizes=SIZES, seed: int = 0, dtype=jnp.float32):
    """A synthetic classification set (nothing downloaded): ``(net, params, x, y)``, x of shape
    ``(samples, D)`` standard normal, y one-hot labels of a random linear teacher, on the
    device."""
    rng = np.random.default_rng(seed)
    D, O = sizes[0], sizes[-1]
    x = rng.standard_normal((samples, D)).astype(dtype)
    labels = np.argmax(x @ rng.standard_normal((D, O)).astype(dtype), axis=1)
    y = np.eye(O, dtype=dtype)[labels]
    net = fnn.Network(sizes, hidden="relu", output="softmax")
    params = net.init(jax.random.key(seed), dtype)
    return net, params, jax.device_put(x), jax.device_put(y)


def hand_written_scan(net, loss, optimizer, steps: int, batch_size: int, reduction="mean"):
    """The loop a JAX user writes: one jitted ``lax.scan`` over steps, ``jax.value_and_grad``
    of the objective, optax, one permutation of the samples per epoch (all drawn up front).
    Returns ``train(params, x, y, key) -> (params, losses)``."""
    J = fnn.objective(net, loss, reduction)

    @jax.jit
    def train(params, x, y, key):
        N = x.shape[0]
        per_epoch = N // batch_size
        epochs = -(-steps // per_epoch)
        perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), N))(
            jnp.arange(epochs)
        )  # (epochs, N)

        def step(carry, t):
            params, opt_state = carry
            idx = jax.lax.dynamic_slice_in_dim(
                perms[t // per_epoch], (t % per_epoch) * batch_size, batch_size
            )
            value, grads = jax.value_and_grad(J)(params, x[idx], y[idx])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                           jnp.arange(steps))  # fmt: skip
        return params, losses

    return train


def torch_eager(net, params, x, y, steps: int, batch_size: int, lr: float = 1e-3,
                threads: int | None = None):  # fmt: skip
    """The same steps in PyTorch eager (Adam, mean cross-entropy, one permutation per epoch);
    a function of no arguments that runs them, or ``None`` when torch is not installed.
    ``threads`` sets ``torch.set_num_threads`` (on a busy 2-core machine, 2 threads ran 5-8x
    slower than 1: oversubscription; time it on a quiet machine)."""
    try:
        import torch
    except ImportError:
        return None
    if threads is not None:
        torch.set_num_threads(threads)
    layers = [torch.nn.Linear(W.shape[1], W.shape[0]) for W, _ in params]
    with torch.no_grad():
        for layer, (W, b) in zip(layers, params, strict=True):
            layer.weight.copy_(torch.tensor(np.asarray(W)))
            layer.bias.copy_(torch.tensor(np.asarray(b)))
    mods = []
    for layer in layers[:-1]:
        mods += [layer, torch.nn.ReLU()]
    model = torch.nn.Sequential(*mods, layers[-1])
    xt, labels = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y).argmax(1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    N = xt.shape[0]
    per_epoch = N // batch_size

    def run():
        g = torch.Generator().manual_seed(0)
        for t in range(steps):
            if t % per_epoch == 0:
                perm = torch.randperm(N, generator=g)
            idx = perm[(t % per_epoch) * batch_size : (t % per_epoch + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            value = torch.nn.functional.cross_entropy(model(xt[idx]), labels[idx])
            value.backward()
            opt.step()
        return float(value.detach())

    return run


def _median_ratio(a, b, pairs: int):
    """Warm times of ``a`` and ``b`` (after one call each), interleaved A B A B; the median of
    each and the median of the per-pair ratios b / a."""
    a(), b()
    ta, tb = [], []
    for _ in range(pairs):
        for f, ts in ((a, ta), (b, tb)):
            start = time.perf_counter()
            f()
            ts.append(time.perf_counter() - start)
    ratios = [y / x for x, y in zip(ta, tb, strict=True)]
    return {"a_s": float(np.median(ta)), "b_s": float(np.median(tb)),
            "ratio": float(np.median(ratios)), "pairs": pairs}  # fmt: skip


def fit_against_scan(
    samples: int = 60_000,
    steps: int = 400,
    batch_size: int = 128,
    pairs: int = 5,
    chunk_size: int = 100,
    torch: bool = False,
) -> dict:
    """Warm seconds of ``fnn.fit`` and of :func:`hand_written_scan` on the same problem (784-256-
    256-10 ReLU/softmax, mean cross-entropy, Adam 1e-3), interleaved; ``fit_over_scan`` is the
    median of the per-pair ratios (the target is 1.00-1.05). With ``torch``, PyTorch eager too
    (``torch_over_fit``)."""
    net, params, x, y = problem(samples)
    optimizer = optax.adam(1e-3)
    key = jax.random.key(1)
    scan = hand_written_scan(net, "cross_entropy", optimizer, steps, batch_size)

    def run_fit():
        p, h = fnn.fit(net, "cross_entropy", params, x, y, optimizer, steps, batch_size, key,
                       reduction="mean", chunk_size=chunk_size)  # fmt: skip
        return jax.block_until_ready(p)

    def run_scan():
        return jax.block_until_ready(scan(params, x, y, key))

    r = _median_ratio(run_scan, run_fit, pairs)
    row = {"samples": samples, "steps": steps, "batch_size": batch_size, "chunk_size": chunk_size,
           "scan_s": r["a_s"], "fit_s": r["b_s"], "fit_over_scan": r["ratio"], "pairs": pairs,
           "device": str(jax.devices()[0].platform)}  # fmt: skip
    # the same batches and steps: with autodiff, fit's losses are the hand-written loop's, bit
    # for bit (backprop rounds differently in float32, and 400 Adam steps amplify that)
    _, h = fnn.fit(net, "cross_entropy", params, x, y, optimizer, steps, batch_size, key,
                   gradient=fnn.autodiff, reduction="mean", chunk_size=chunk_size)  # fmt: skip
    _, ref = scan(params, x, y, key)
    row["same_losses_with_autodiff"] = bool(np.array_equal(h.loss, np.asarray(ref)))
    if torch:
        run_torch = torch_eager(net, params, x, y, steps, batch_size)
        if run_torch is None:
            row["torch_s"] = None
        else:
            rt = _median_ratio(run_fit, run_torch, max(1, pairs // 2))
            row["torch_s"], row["torch_over_fit"] = rt["b_s"], rt["ratio"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=60_000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--chunk-size", type=int, default=100)
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--torch", action="store_true", help="PyTorch eager too (if installed)")
    args = p.parse_args(argv)
    row = fit_against_scan(args.samples, args.steps, args.batch_size, args.pairs,
                           args.chunk_size, args.torch)  # fmt: skip
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
