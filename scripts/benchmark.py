"""Benchmark functional_nn's gradient methods as ratios taken in one run.

Every comparison interleaves the two jitted calls (A B A B ...) after a warm-up and reports the
median of the per-pair time ratios, which holds to about 2% on a shared machine where separate
medians swing by 10%. Achieved GFLOP/s are printed beside the device's measured ``jnp.dot``
peak for the same dtype. Run it when nothing else runs.

    python scripts/benchmark.py            # everything (a few minutes on 2 cores)
    python scripts/benchmark.py --quick    # fewer repetitions, no 1024-2048-2048-1024
    python scripts/benchmark.py --json bench.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)  # for the float64 peak; every array here names its dtype

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import functional_nn as fnn  # noqa: E402
from functional_nn.finite_differences import _ravel, _steps  # noqa: E402
from functional_nn.gradcheck import _directions, directional_derivatives  # noqa: E402

# (label, Network kwargs, loss, batch): the networks of the core issue
NETWORKS = [
    ("64-32-32-1", dict(sizes=(64, 32, 32, 1), hidden="relu"), "bce", 256),
    ("784-256-256-10", dict(sizes=(784, 256, 256, 10), hidden="relu"), "bce", 256),
    (
        "1024-2048-2048-1024",
        dict(sizes=(1024, 2048, 2048, 1024), hidden="relu", output="identity"),
        "mse",
        1024,
    ),
]


def _timed(f, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(f(*args))
    return time.perf_counter() - start


def median_time(f, *args, reps: int = 10) -> float:
    """Median wall time of ``f(*args)`` after one warm-up call."""
    jax.block_until_ready(f(*args))
    return statistics.median(_timed(f, *args) for _ in range(reps))


def paired(f_a, f_b, *args, pairs: int = 10) -> dict:
    """Interleave ``f_a`` and ``f_b`` (A B A B ...) after a warm-up of each.

    Returns the median time of each and the median of the per-pair ratios ``t_a / t_b``.
    Calls under a millisecond get more pairs (up to 200, about 0.3 s of pairs in all), since
    their ratio is the noisiest.
    """
    jax.block_until_ready(f_a(*args))
    jax.block_until_ready(f_b(*args))
    pairs = max(pairs, min(200, int(0.3 / max(_timed(f_a, *args), 1e-6))))
    t_a, t_b = [], []
    for _ in range(pairs):
        t_a.append(_timed(f_a, *args))
        t_b.append(_timed(f_b, *args))
    ratios = [a / b for a, b in zip(t_a, t_b, strict=True)]
    return {
        "a_s": statistics.median(t_a),
        "b_s": statistics.median(t_b),
        "ratio": statistics.median(ratios),
    }


def dot_peak(dtype, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of a jitted square ``jnp.dot`` of size ``n``: the device's practical peak."""
    k1, k2 = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k1, (n, n), dtype)
    b = jax.random.normal(k2, (n, n), dtype)
    t = median_time(jax.jit(jnp.dot), a, b, reps=reps)
    return 2 * n**3 / t / 1e9


def gradient_flops(net: fnn.Network, batch: int) -> int:
    """Flops a value-and-gradient needs: forward, weight gradients, and input gradients for
    layers 2..L+1 (the first layer needs none). Elementwise work is not counted."""
    mults = [o * i for o, i in zip(net.sizes[1:], net.sizes[:-1], strict=True)]
    return 2 * batch * (2 * sum(mults) + sum(mults[1:]))


def problem(net: fnn.Network, loss: str, batch: int, dtype):
    kp, kx, ky = jax.random.split(jax.random.key(0), 3)
    params = net.init(kp, dtype)
    x = jax.random.normal(kx, (batch, net.D), dtype)
    if loss == "bce":
        y = (jax.random.uniform(ky, (batch, net.O)) > 0.5).astype(dtype)
    else:
        y = jax.random.normal(ky, (batch, net.O), dtype)
    return params, x, y


CHAIN_UP_TO = 2e8  # factor entries a jacobian_chain call materializes, over the whole batch


def bench_methods(networks, dtype, pairs: int) -> list[dict]:
    """backprop (and, where its factors stay small, jacobian_chain) against autodiff, value
    and gradient, jitted, per network."""
    factor_size = sys.modules["functional_nn.backprop"]._factor_size
    rows = []
    for label, kw, loss, batch in networks:
        net = fnn.Network(**kw)
        params, x, y = problem(net, loss, batch, dtype)
        backprop = jax.jit(functools.partial(fnn.backprop, net, loss))
        autodiff = jax.jit(functools.partial(fnn.autodiff, net, loss))
        r = paired(backprop, autodiff, params, x, y, pairs=pairs)
        flops = gradient_flops(net, batch)
        rows.append(
            {
                "network": label,
                "batch": batch,
                "dtype": jnp.dtype(dtype).name,
                "backprop_ms": 1e3 * r["a_s"],
                "autodiff_ms": 1e3 * r["b_s"],
                "backprop_over_autodiff": r["ratio"],
                "backprop_gflops": flops / r["a_s"] / 1e9,
                "autodiff_gflops": flops / r["b_s"] / 1e9,
                "factor_entries_per_sample": factor_size(net),
                "jacobian_chain_ms": None,
                "jacobian_chain_over_autodiff": None,
            }
        )
        if factor_size(net) * batch <= CHAIN_UP_TO:
            chain = jax.jit(functools.partial(fnn.jacobian_chain, net, loss))
            rc = paired(chain, autodiff, params, x, y, pairs=max(2, pairs // 3))
            rows[-1]["jacobian_chain_ms"] = 1e3 * rc["a_s"]
            rows[-1]["jacobian_chain_over_autodiff"] = rc["ratio"]
    return rows


def memory_bytes(f, *args) -> dict:
    """XLA's own accounting of a compiled call: temporaries, arguments and outputs."""
    m = jax.jit(f).lower(*args).compile().memory_analysis()
    temp, arg, out = m.temp_size_in_bytes, m.argument_size_in_bytes, m.output_size_in_bytes
    return {"temp_bytes": temp, "peak_bytes": temp + arg + out}


def bench_jacobian_chain(dtype, pairs: int, batch: int = 1000) -> dict:
    """The lecture's network (4-3-2, sigmoid, BCE, no bias) at batch 1000."""
    net = fnn.Network((4, 3, 2), bias=False)
    params, x, y = problem(net, "bce", batch, dtype)
    chain = functools.partial(fnn.jacobian_chain, net, "bce")
    autodiff = functools.partial(fnn.autodiff, net, "bce")
    r = paired(jax.jit(chain), jax.jit(autodiff), params, x, y, pairs=pairs)
    return {
        "network": "4-3-2 (lecture)",
        "batch": batch,
        "dtype": jnp.dtype(dtype).name,
        "jacobian_chain_ms": 1e3 * r["a_s"],
        "autodiff_ms": 1e3 * r["b_s"],
        "jacobian_chain_over_autodiff": r["ratio"],
        **{f"jacobian_chain_{k}": v for k, v in memory_bytes(chain, params, x, y).items()},
        **{f"autodiff_{k}": v for k, v in memory_bytes(autodiff, params, x, y).items()},
    }


# (P label, sizes): networks of about 10^2 .. 10^5 parameters for the cost law
COST_LAW = [
    ("1e2", (8, 8, 4)),
    ("1e3", (32, 24, 8)),
    ("1e4", (100, 90, 10)),
    ("1e5", (300, 300, 30)),
]
LOCAL_UP_TO = 20_000  # local differences materialize (H_l, H_l H_{l-1}) per sample: not beyond


def _central(net, loss, chunk_size=None):
    """Jitted central differences of the objective, ``(params, x, y) -> grads``."""
    J = fnn.objective(net, loss)

    def grad(params, x, y):
        return fnn.finite_difference_grad(lambda q: J(q, x, y), params, chunk_size=chunk_size)

    return jax.jit(grad)


def _directional(net, loss, v):
    return jax.jit(lambda p, x, y: directional_derivatives(net, loss, p, x, y, v))


def bench_cost_law(dtype, batch: int, quick: bool) -> list[dict]:
    """Central, local and directional differences against backprop, as P grows.

    Each time is the median of interleaved pairs against backprop, so every ratio is taken
    in the same run; FD / (P x backprop) is the lecture's claim made visible.
    """
    rows = []
    for _, sizes in COST_LAW[:2] if quick else COST_LAW:
        net = fnn.Network(sizes, hidden="tanh")
        params, x, y = problem(net, "bce", batch, dtype)
        P = net.num_params()
        bp = jax.jit(functools.partial(fnn.backprop, net, "bce"))
        v = _directions(params, 16, jax.random.key(1))
        pairs = 1 if P > 20_000 else 3
        r_fd = paired(_central(net, "bce"), bp, params, x, y, pairs=pairs)
        r_dir = paired(_directional(net, "bce", v), bp, params, x, y, pairs=max(3, pairs))
        row = {
            "P": P,
            "sizes": list(sizes),
            "batch": batch,
            "backprop_ms": 1e3 * r_fd["b_s"],
            "central_ms": 1e3 * r_fd["a_s"],
            "central_over_P_backprop": r_fd["ratio"] / P,
            "directional16_ms": 1e3 * r_dir["a_s"],
            "directional16_over_backprop": r_dir["ratio"],
            "local_ms": None,
            "local_over_backprop": None,
        }
        if P <= LOCAL_UP_TO:
            local = jax.jit(functools.partial(fnn.local_finite_differences, net, "bce"))
            r_loc = paired(local, bp, params, x, y, pairs=pairs)
            row["local_ms"] = 1e3 * r_loc["a_s"]
            row["local_over_backprop"] = r_loc["ratio"]
        rows.append(row)
    return rows


def _python_loop(net, loss, params, x, y):
    """Central differences as a Python loop of jitted single evaluations (2P calls)."""
    J = fnn.objective(net, loss)
    theta, unravel = _ravel(params)
    h = _steps(theta, "central", fnn.default_eps("central", theta.dtype))
    one = jax.jit(lambda t: J(unravel(t), x, y))

    def loop(_):
        columns = [
            (one(theta.at[i].add(h[i])) - one(theta.at[i].add(-h[i]))) / (2 * h[i])
            for i in range(theta.shape[0])
        ]
        return columns[-1]

    return loop


def bench_vectorization(dtype, batch: int, quick: bool) -> list[dict]:
    """Vmapped chunks of directions against a Python loop of jitted single evaluations, and
    the chunk size: central differences, same problem, interleaved."""
    rows = []
    chunks = (32,) if quick else (1, 8, 32, 64, 128, 256)
    for _, sizes in COST_LAW[:2] if quick else COST_LAW[:3]:
        net = fnn.Network(sizes, hidden="tanh")
        params, x, y = problem(net, "bce", batch, dtype)
        P = net.num_params()
        loop = _python_loop(net, "bce", params, x, y)
        row = {"P": P}
        for c in chunks:
            f = _central(net, "bce", chunk_size=c)
            pairs = 1 if quick or P > 5000 else 3
            r = paired(lambda p, x, y, loop=loop: loop(p), f, params, x, y, pairs=pairs)
            row["loop_ms"] = 1e3 * r["a_s"]
            row[f"chunk{c}_ms"] = 1e3 * r["b_s"]
            row[f"loop_over_chunk{c}"] = r["ratio"]
        rows.append(row)
    return rows


def bench_training(steps: int, pairs: int) -> dict:
    """Steps per second on breast_cancer, 30-16-1 ReLU, full batch, Adam 1e-3, mean BCE:
    the compiled scan loop of ``fit`` against a Python loop of jitted steps (interleaved), and
    scikit-learn's MLPClassifier and PyTorch (where installed) for the same number of epochs."""
    from functional_nn.train import _Carry, make_step

    ds = fnn.load_dataset("breast_cancer")
    x, y = ds.x_train.astype(jnp.float32), ds.y_train.astype(jnp.float32)
    net = fnn.Network((30, 16, 1), hidden="relu")
    params = net.init(jax.random.key(0), jnp.float32)
    opt = optax.adam(1e-3)

    def scan_fit():
        return fnn.fit(net, "bce", params, x, y, opt, steps, reduction="mean",
                       chunk_size=steps)[1].loss  # fmt: skip

    step = jax.jit(make_step(net, "bce", opt, fnn.backprop, "mean", None, 0.0, False))
    data = (x, y, None, None, jax.random.key(0))

    def python_loop():
        carry = _Carry(params, opt.init(params), params, jnp.inf, 0)
        losses = []
        for t in range(steps):
            carry, (J, _) = step(carry, t, data)
            losses.append(J)
        return jnp.stack(losses)

    r = paired(python_loop, scan_fit, pairs=pairs)
    same = bool(np.allclose(np.asarray(python_loop()), np.asarray(scan_fit()), rtol=1e-6))
    row = {
        "steps": steps,
        "scan_steps_per_s": steps / r["b_s"],
        "python_loop_steps_per_s": steps / r["a_s"],
        "scan_speedup": r["ratio"],
        "same_losses": same,
        "final_loss": float(scan_fit()[-1]),
    }
    try:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        def sk():
            clf = MLPClassifier((16,), activation="relu", solver="adam", alpha=0.0,
                                learning_rate_init=1e-3, batch_size=x.shape[0], max_iter=steps,
                                shuffle=False, tol=0.0, n_iter_no_change=10**9,
                                random_state=0)  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(np.asarray(x), np.ravel(np.asarray(y)))
            return clf.loss_

        r_sk = paired(sk, scan_fit, pairs=max(1, pairs // 2))
        row["sklearn_steps_per_s"] = steps / r_sk["a_s"]
        row["sklearn_over_scan"] = r_sk["ratio"]
        row["sklearn_final_loss"] = float(sk())
    except ImportError:
        row["sklearn_steps_per_s"] = None
    try:
        import torch  # the optional bench extra
    except ImportError:
        row["torch_steps_per_s"] = None
    else:
        W1, W2 = (torch.tensor(np.asarray(p.W)) for p in params)
        b1, b2 = (torch.tensor(np.asarray(p.b)) for p in params)
        xt, yt = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))

        def torch_loop():
            ps = [t.clone().requires_grad_(True) for t in (W1, b1, W2, b2)]
            o = torch.optim.Adam(ps, lr=1e-3)
            for _ in range(steps):
                o.zero_grad()
                z = torch.relu(xt @ ps[0].T + ps[1]) @ ps[2].T + ps[3]
                J = torch.nn.functional.binary_cross_entropy_with_logits(z, yt)
                J.backward()
                o.step()
            return float(J.detach())

        r_t = paired(torch_loop, scan_fit, pairs=max(1, pairs // 2))
        row["torch_steps_per_s"] = steps / r_t["a_s"]
        row["torch_over_scan"] = r_t["ratio"]
        row["torch_final_loss"] = torch_loop()
    return row


def bench_jacobian_chain_memory() -> dict:
    """XLA's peak for jacobian_chain on 784-256-10 at batch 1024, float32 (the chunk bound)."""
    net = fnn.Network((784, 256, 10), hidden="relu", output="softmax")
    params, x, _ = problem(net, "mse", 1024, jnp.float32)
    y = jax.nn.one_hot(jnp.arange(1024) % 10, 10, dtype=jnp.float32)
    chain = memory_bytes(functools.partial(fnn.jacobian_chain, net, "cross_entropy"), params, x, y)
    auto = memory_bytes(functools.partial(fnn.autodiff, net, "cross_entropy"), params, x, y)
    return {"network": "784-256-10", "batch": 1024, "jacobian_chain": chain, "autodiff": auto}


DATA_PARALLEL = """
import json, time, jax, jax.numpy as jnp, optax, functional_nn as fnn
from functional_nn.parallel import data_mesh
net = fnn.Network((784, 256, 256, 10), hidden="relu", output="softmax")
params = net.init(jax.random.key(0), jnp.float32)
x = jax.random.normal(jax.random.key(1), (1024, 784), jnp.float32)
y = jax.nn.one_hot(jnp.arange(1024) % 10, 10, dtype=jnp.float32)
mesh = data_mesh() if len(jax.devices()) > 1 else None
run = lambda: fnn.fit(net, "cross_entropy", params, x, y, optax.adam(1e-3), STEPS,
                      reduction="mean", chunk_size=STEPS, mesh=mesh)
run()
times, out = [], None
for _ in range(3):
    start = time.perf_counter(); out = run(); times.append(time.perf_counter() - start)
print(json.dumps({"devices": len(jax.devices()), "step_ms": 1e3 * min(times) / STEPS,
                  "final_loss": float(out[1].loss[-1])}))
"""


def bench_data_parallel(steps: int) -> list[dict]:
    """A training step of 784-256-256-10 at batch 1024 on 1, 2 and 4 simulated CPU devices,
    each in a fresh process (the device count is fixed when JAX starts)."""
    import os
    import subprocess

    rows = []
    for n in (1, 2, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        code = DATA_PARALLEL.replace("STEPS", str(steps))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           timeout=600)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for row in rows:
        row["over_1_device"] = row["step_ms"] / base["step_ms"]
        row["final_loss_diff"] = abs(row["final_loss"] - base["final_loss"])
    return rows


def bench_sympy(quick: bool) -> list[dict]:
    """SymPy's closed forms: derivation + lambdify + first jitted call, as P grows."""
    from derivations import sympy_gradient
    from derivations.method import closed_form

    rows = []
    archs = [(4, 3, 2), (8, 6, 4)] if quick else [(4, 3, 2), (8, 6, 4), (16, 8, 1), (12, 10, 6)]
    for sizes in archs:
        net = fnn.Network(sizes, bias=False)
        params, x, y = problem(net, "bce", 32, jnp.float32)
        closed_form.cache_clear()
        start = time.perf_counter()
        jax.block_until_ready(jax.jit(functools.partial(sympy_gradient, net, "bce"))(params, x, y))
        rows.append({"sizes": list(sizes), "P": net.num_params(),
                     "first_call_s": time.perf_counter() - start})  # fmt: skip
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repetitions, smaller networks")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    pairs = 5 if args.quick else 15
    networks = NETWORKS[:2] if args.quick else NETWORKS
    console = Console(width=max(Console().width, 140))
    device = jax.devices()[0]
    console.print(f"device: {device.device_kind} ({device.platform}), jax {jax.__version__}")

    dtype = jnp.float32
    peaks = {
        jnp.dtype(d).name: dot_peak(d, n=1024 if args.quick else 2048)
        for d in (jnp.float32, jnp.float64, jnp.bfloat16)
    }
    peak = peaks["float32"]
    console.print("jnp.dot peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))

    methods = bench_methods(networks, dtype, pairs)
    t = Table(title="value and gradient, float32, jitted (ratio: median of interleaved pairs)")
    for col in ("network", "batch", "backprop ms", "autodiff ms", "backprop/autodiff",
                "backprop GFLOP/s", "% of dot peak", "jacobian_chain/autodiff"):  # fmt: skip
        t.add_column(col, justify="left" if col == "network" else "right")
    for r in methods:
        chain = r["jacobian_chain_over_autodiff"]
        t.add_row(
            r["network"],
            str(r["batch"]),
            f"{r['backprop_ms']:.3f}",
            f"{r['autodiff_ms']:.3f}",
            f"{r['backprop_over_autodiff']:.3f}",
            f"{r['backprop_gflops']:.1f}",
            f"{100 * r['backprop_gflops'] / peak:.0f}%",
            f"{chain:.1f}"
            if chain is not None
            else f"- ({r['factor_entries_per_sample']:.2g} entries/sample)",
        )
    console.print(t)

    chain = bench_jacobian_chain(dtype, pairs)
    console.print(
        f"jacobian_chain, {chain['network']}, batch {chain['batch']}: "
        f"{chain['jacobian_chain_ms']:.3f} ms ({chain['jacobian_chain_over_autodiff']:.2f}x "
        f"autodiff), peak memory {chain['jacobian_chain_peak_bytes'] / 2**10:.0f} KiB "
        f"(autodiff {chain['autodiff_peak_bytes'] / 2**10:.0f} KiB)"
    )
    cost = bench_cost_law(dtype, 64, args.quick)
    t = Table(title="the cost law: finite differences against back-propagation (float32, N=64)")
    for col in ("P", "backprop ms", "central ms", "central / (P x backprop)", "local ms",
                "local / backprop", "directional k=16 ms", "directional / backprop"):  # fmt: skip
        t.add_column(col, justify="right")
    for r in cost:
        t.add_row(
            str(r["P"]), f"{r['backprop_ms']:.3f}", f"{r['central_ms']:.1f}",
            f"{r['central_over_P_backprop']:.2f}",
            "-" if r["local_ms"] is None else f"{r['local_ms']:.1f}",
            "-" if r["local_over_backprop"] is None else f"{r['local_over_backprop']:.0f}",
            f"{r['directional16_ms']:.2f}", f"{r['directional16_over_backprop']:.1f}",
        )  # fmt: skip
    console.print(t)

    vec = bench_vectorization(dtype, 64, args.quick)
    t = Table(title="central differences: Python loop of jitted evaluations / vmapped chunks")
    t.add_column("P", justify="right")
    t.add_column("loop ms", justify="right")
    chunk_cols = [k for k in vec[0] if k.startswith("loop_over_chunk")]
    for k in chunk_cols:
        t.add_column(f"chunk {k.removeprefix('loop_over_chunk')}", justify="right")
    for r in vec:
        t.add_row(str(r["P"]), f"{r['loop_ms']:.1f}", *(f"{r[k]:.1f}x" for k in chunk_cols))
    console.print(t)

    tr = bench_training(500 if args.quick else 2000, 3 if args.quick else 7)
    t = Table(title="training steps per second: breast_cancer 30-16-1, full batch, Adam (float32)")
    for col in ("loop", "steps/s", "fit's scan is faster by", "final loss"):
        t.add_column(col, justify="left" if col == "loop" else "right")
    t.add_row(
        "fit: compiled lax.scan", f"{tr['scan_steps_per_s']:.0f}", "-", f"{tr['final_loss']:.6f}"
    )
    same = "same" if tr["same_losses"] else "DIFFERENT"
    t.add_row("Python loop of jitted steps", f"{tr['python_loop_steps_per_s']:.0f}",
              f"{tr['scan_speedup']:.2f}x", same)  # fmt: skip
    for name, key in (("scikit-learn MLPClassifier", "sklearn"), ("PyTorch eager", "torch")):
        if tr.get(f"{key}_steps_per_s") is None:
            t.add_row(name, "not installed", "-", "-")
        else:
            t.add_row(name, f"{tr[f'{key}_steps_per_s']:.0f}", f"{tr[f'{key}_over_scan']:.2f}x",
                      f"{tr[f'{key}_final_loss']:.6f}")  # fmt: skip
    console.print(t)

    mem = bench_jacobian_chain_memory()
    console.print(
        f"jacobian_chain, 784-256-10, batch 1024, float32: peak "
        f"{mem['jacobian_chain']['peak_bytes'] / 2**20:.0f} MiB (autodiff "
        f"{mem['autodiff']['peak_bytes'] / 2**20:.1f} MiB)"
    )
    dp = bench_data_parallel(20 if args.quick else 50)
    t = Table(title="data-parallel fit step, 784-256-256-10, batch 1024, simulated CPU devices")
    for col in ("devices", "step ms", "over 1 device", "|final loss - 1 device's|"):
        t.add_column(col, justify="right")
    for r in dp:
        t.add_row(str(r["devices"]), f"{r['step_ms']:.2f}", f"{r['over_1_device']:.2f}x",
                  f"{r['final_loss_diff']:.1e}")  # fmt: skip
    console.print(t)

    sym = bench_sympy(args.quick)
    console.print(
        "sympy_gradient, derivation + lambdify + first jitted call: "
        + ", ".join(
            f"P={r['P']} ({'-'.join(map(str, r['sizes']))}) {r['first_call_s']:.2f} s" for r in sym
        )  # fmt: skip
    )

    if args.json:
        result = {
            "device": str(device),
            "jax": jax.__version__,
            "dot_peak_gflops": peaks,
            "methods": methods,
            "jacobian_chain": chain,
            "cost_law": cost,
            "vectorization": vec,
            "sympy": sym,
            "training": tr,
            "jacobian_chain_memory": mem,
            "data_parallel": dp,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
