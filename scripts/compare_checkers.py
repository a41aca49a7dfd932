"""Compare gradient checkers on the same functions: functional_nn's check_grad / check_vjp,
jax.test_util.check_grads and (if installed) torch.autograd.gradcheck.

Five tables:

1. The zoo: functions others wrote (jax.nn's sigmoid, softplus, gelu, silu, logsumexp,
   log_softmax; tanh, exp times sin, a norm, a small tanh MLP, BCE on logits), random inputs,
   several seeds, in float32 and float64. For each checker: the rate of right gradients it
   fails (false failures), the rate of planted errors it catches (the largest gradient entry
   5% off in float32, 1% in float64, through a custom_vjp / autograd.Function), and the
   median time to a verdict.
2. Forward mode, the same zoo: functional_nn's check_jvp against check_grads(modes=["fwd"])
   and torch's gradcheck(check_forward_ad=True, check_backward_ad=False), the errors planted
   through a custom_jvp tangent rule / an autograd.Function's jvp (bench/compare_modes.py).
3. Complex inputs (bench/compare_modes.py): 9 functions of z in C^6, complex64 and complex128,
   check_grad / check_vjp against check_grads and gradcheck (Wirtinger); planted: the VJP
   conjugated (the other framework's convention), the largest entry 5% / 1% off.
4. Non-smooth and low precision (bench/compare_precision.py): a ReLU and a leaky-ReLU MLP, a
   max-pool, abs, a hinge loss and a ReLU CNN in float32; bfloat16 and float16 parameters,
   float32 ones computed in bfloat16, a fused bfloat16 attention against the plain one.
5. Planted bugs, one verdict each: a sign flip of one leaf, one entry off, a transposed leaf,
   a VJP rule right only for a unit cotangent, a misplaced stop_gradient (second order), a sign
   flip in a 10-entry leaf beside a 20,000-entry leaf whose gradient is 1e5 times larger.

    python scripts/compare_checkers.py            # 20 seeds
    python scripts/compare_checkers.py --seeds 5  # quicker
    python scripts/compare_checkers.py --precision  # the non-smooth and low-precision zoos
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)  # float64 cases; float32 ones ask for it

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench.compare_modes import (  # noqa: E402
    forward_caption,
    jax_planted_jvp,
    jax_tool_fwd,
    ours_fwd,
    print_complex_tables,
    torch_planted_jvp,
    torch_tool_fwd,
)
from bench.compare_precision import print_precision_tables  # noqa: E402
from jax.test_util import check_grads  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import functional_nn as fnn  # noqa: E402

try:
    import torch
except Exception:  # noqa: BLE001 -- torch is optional
    torch = None

OFF = {"float32": 0.05, "float64": 0.01}
N = 9
LABELS = np.array([1.0, 0, 0, 1, 1, 0, 1, 0, 1])
WEIGHTS = np.linspace(-1.0, 1.0, N)

# what each checker does, in words (the features table)
FEATURES = [
    ("verdict per leaf, naming the leaf", "yes", "no (one direction, all leaves)", "per input"),
    ("step chosen from the dtype", "yes (u^(1/5), ladder)", "no (1e-4 fixed)", "no (1e-6)"),
    ("complex step, validated", "yes", "no", "no"),
    ("complex parameters", "yes: real pairs (Re, Im), JAX's convention, central differences",
     "complex inputs, one direction", "Wirtinger (gradcheck)"),
    ("reference's own error bar in the test", "yes (Richardson)", "no", "no"),
    ("Taylor remainder order, no step size", "yes", "no", "no"),
    ("custom_vjp at top level checked exactly", "yes (primal autodiff)", "modes=['rev']",
     "n/a"),
    ("VJP: dot product, zero, vmap", "yes", "rev only", "full Jacobian"),
    ("JVP (forward mode): per leaf, linearity, zero, vmap, transpose", "check_jvp",
     "modes=['fwd'] (one direction)", "check_forward_ad"),
    ("non-array leaves (a function, a key, an int) held", "yes, named", "no", "n/a"),
    ("second order", "order=2 (HVP)", "order=2", "gradgradcheck"),
    ("kinks (pattern=)", "yes", "no", "no"),
    ("float32 without false failures", "yes", "mostly", "no (use float64)"),
    ("bfloat16, float16, mixed precision: against the program in float64",
     "yes (promote; rounding yardstick; baseline=)", "no", "no"),
]  # fmt: skip


# -- the zoo, in both frameworks ----------------------------------------------------------------


def _jax_zoo():
    def c(a, x):
        return jnp.asarray(a, x.dtype)

    return {
        "sigmoid": lambda x: jnp.sum(jax.nn.sigmoid(x)),
        "softplus": lambda x: jnp.sum(jax.nn.softplus(x)),
        "gelu": lambda x: jnp.sum(jax.nn.gelu(x)),
        "silu": lambda x: jnp.sum(jax.nn.silu(x)),
        "logsumexp": lambda x: jax.nn.logsumexp(x),
        "log_softmax": lambda x: jnp.sum(c(WEIGHTS, x) * jax.nn.log_softmax(x)),
        "tanh": lambda x: jnp.sum(jnp.tanh(x)),
        "exp*sin": lambda x: jnp.sum(jnp.exp(x) * jnp.sin(x)),
        "norm": lambda x: jnp.linalg.norm(x),
        "tanh mlp": lambda x: jnp.sum(jnp.tanh(jnp.tanh(x[:6].reshape(2, 3)) @ x[6:9])),
        "bce on logits": lambda x: jnp.sum(jax.nn.softplus(x) - c(LABELS, x) * x),
    }


def _torch_zoo():
    F = torch.nn.functional

    def c(a, x):
        return torch.as_tensor(a, dtype=x.dtype)

    return {
        "sigmoid": lambda x: torch.sigmoid(x).sum(),
        "softplus": lambda x: F.softplus(x).sum(),
        "gelu": lambda x: F.gelu(x, approximate="tanh").sum(),
        "silu": lambda x: F.silu(x).sum(),
        "logsumexp": lambda x: torch.logsumexp(x, 0),
        "log_softmax": lambda x: (c(WEIGHTS, x) * F.log_softmax(x, 0)).sum(),
        "tanh": lambda x: torch.tanh(x).sum(),
        "exp*sin": lambda x: (torch.exp(x) * torch.sin(x)).sum(),
        "norm": lambda x: torch.linalg.norm(x),
        "tanh mlp": lambda x: torch.tanh(torch.tanh(x[:6].reshape(2, 3)) @ x[6:9]).sum(),
        "bce on logits": lambda x: (F.softplus(x) - c(LABELS, x) * x).sum(),
    }


def jax_planted(f, off):
    """``f`` through a custom_vjp whose gradient has its largest entry ``off`` too large
    (wherever it is evaluated: one function serves every seed)."""

    @jax.custom_vjp
    def h(x):
        return f(x)

    def bwd(x, ct):
        g = jax.grad(f)(x)
        i = jnp.argmax(jnp.abs(g))
        return (ct * g.at[i].multiply(1 + off),)

    h.defvjp(lambda x: (f(x), x), bwd)
    return h


def torch_planted(f, off):
    class Planted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return f(x)

        @staticmethod
        def backward(ctx, ct):
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                xx = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(f(xx), xx)
            g = g.clone()
            i = torch.argmax(g.abs())
            g[i] = g[i] * (1 + off)
            return ct * g

    return Planted.apply


# -- the three checkers as verdicts -------------------------------------------------------------


def ours(f, x) -> bool:
    return fnn.check_grad(f, x).ok


def jax_tool(f, x) -> bool:
    try:
        check_grads(f, (x,), order=1, modes=["rev"])  # custom_vjp needs modes=["rev"] (#3996)
        return True
    except AssertionError:
        return False


def torch_tool(f, x) -> bool:
    t = torch.tensor(np.asarray(x), requires_grad=True)
    try:
        return bool(torch.autograd.gradcheck(f, (t,), raise_exception=False))
    except RuntimeError:
        return False


def forward_tools() -> dict:
    """Forward mode: check_jvp, check_grads(modes=["fwd"]) planted through custom_jvp, and
    torch's gradcheck(check_forward_ad=True) planted through an autograd.Function's jvp."""
    tools = {
        "functional_nn.check_jvp": (ours_fwd, _jax_zoo(), jax_planted_jvp),
        "jax.test_util.check_grads fwd": (jax_tool_fwd, _jax_zoo(), jax_planted_jvp),
    }
    if torch is not None:
        tools["torch gradcheck forward AD"] = (torch_tool_fwd, _torch_zoo(), torch_planted_jvp)
    return tools


def zoo_table(seeds: int, tools: dict | None = None) -> list[dict]:
    if tools is None:
        tools = {"functional_nn.check_grad": (ours, _jax_zoo(), jax_planted)}
        tools["jax.test_util.check_grads"] = (jax_tool, _jax_zoo(), jax_planted)
        if torch is not None:
            tools["torch.autograd.gradcheck"] = (torch_tool, _torch_zoo(), torch_planted)
    rows = []
    for tool, (check, zoo, plant) in tools.items():
        row = {"tool": tool}
        for dtype in ("float32", "float64"):
            false = caught = n = 0
            times, first = [], []
            for f in zoo.values():
                h = plant(f, OFF[dtype])
                for seed in range(seeds + 1):  # seed 0 twice: its first call is the cold one
                    key = jax.random.key(max(seed - 1, 0))
                    x = np.asarray(jax.random.normal(key, (N,), dtype))
                    x = x if check in (torch_tool, torch_tool_fwd) else jnp.asarray(x)
                    start = time.perf_counter()
                    ok = check(f, x)
                    (first if seed == 0 else times).append(time.perf_counter() - start)
                    if seed == 0:
                        continue
                    false += not ok
                    caught += not check(h, x)
                    n += 1
            row[f"{dtype} false failures"] = false / n
            row[f"{dtype} caught"] = caught / n
            row[f"{dtype} median s"] = statistics.median(times)
            row[f"{dtype} first s"] = statistics.median(first)
            row["cases"] = n
        rows.append(row)
    return rows


# -- planted bugs, one verdict each -------------------------------------------------------------


def _layer(p):
    return jnp.sum(jnp.tanh(p["W"] @ jnp.tanh(p["W"] @ p["x"]) + p["b"]))


def _bug_params(dtype):
    k = jax.random.split(jax.random.key(1), 3)
    return {"W": jax.random.normal(k[0], (3, 3), dtype), "b": jax.random.normal(k[1], (3,), dtype),
            "x": jax.random.normal(k[2], (3,), dtype)}  # fmt: skip


def _vjp_from(f, grad):
    """``f`` as a custom_vjp whose gradient is ``grad(p)`` (scaled by the cotangent)."""

    @jax.custom_vjp
    def h(p):
        return f(p)

    def bwd(p, ct):
        return (jax.tree_util.tree_map(lambda g: ct * g, grad(p)),)

    h.defvjp(lambda p: (f(p), p), bwd)
    return h


def _with_grad(f, mutate):
    """``f`` whose gradient (as a custom_vjp) is ``mutate(jax.grad(f))``: what jax's check_grads
    can be given; ``grad`` the same mutated gradient for check_grad."""

    def grad(p):
        return mutate(jax.grad(f)(p))

    return _vjp_from(f, grad), grad


def _largest_off(dtype):
    def mutate(g):
        i = jnp.unravel_index(jnp.argmax(jnp.abs(g["W"])), g["W"].shape)
        return {**g, "W": g["W"].at[i].multiply(1 + OFF[dtype])}

    return mutate


def bug_table(dtype: str) -> list[dict]:
    p = _bug_params(dtype)
    bugs = {
        "sign flip of one leaf": lambda g: {**g, "b": -g["b"]},
        f"largest entry {OFF[dtype]:.0%} off": _largest_off(dtype),
        "transposed leaf": lambda g: {**g, "W": g["W"].T},
    }
    rows = []
    for name, mutate in bugs.items():
        h, grad = _with_grad(_layer, mutate)
        report = fnn.check_grad(_layer, p, grad=grad)
        rows.append({"bug": name, "ours": _where(report), "jax": _jax_verdict(h, (p,))})

    @jax.custom_vjp
    def unit_only(x):
        return jnp.sin(x)

    unit_only.defvjp(lambda x: (jnp.sin(x), x), lambda x, ct: (jnp.cos(x),))
    x = jnp.linspace(-1.0, 2.0, 5).astype(dtype)
    rows.append({"bug": "VJP right only for a unit cotangent",
                 "ours": _where(fnn.check_vjp(unit_only, x)),
                 "jax": _jax_verdict(unit_only, (x,))})  # fmt: skip

    def cube(p):
        return jnp.sum(p["w"] ** 3 * p["a"])

    def grad_sg(p):
        w = jax.lax.stop_gradient(p["w"])
        return {"w": 3 * w**2 * p["a"], "a": p["w"] ** 3}

    cube_sg = _vjp_from(cube, grad_sg)
    q = {"w": jnp.array([1.0, -2.0, 0.5], dtype), "a": jnp.array([0.5, 1.5, -1.0], dtype)}
    rows.append({"bug": "misplaced stop_gradient (order 2)",
                 "ours": _where(fnn.check_grad(cube, q, grad=grad_sg, order=2)),
                 "jax": _jax_verdict(cube_sg, (q,), order=2)})  # fmt: skip

    def big_small(p):
        return 1e5 * jnp.sum(jnp.sin(p["big"])) + jnp.sum(jnp.sin(p["small"]))

    k1, k2 = jax.random.split(jax.random.key(2))
    bp = {"big": jax.random.normal(k1, (20_000,), dtype),
          "small": jax.random.normal(k2, (10,), dtype)}  # fmt: skip
    h, grad = _with_grad(big_small, lambda g: {**g, "small": -g["small"]})
    rows.append({"bug": "sign flip in a 10-entry leaf beside 20,000 (1e5 x)",
                 "ours": _where(fnn.check_grad(big_small, bp, grad=grad)),
                 "jax": _jax_verdict(h, (bp,))})  # fmt: skip
    return rows


def _where(report) -> str:
    if report.ok:
        return "missed"
    return "caught: " + ", ".join(sorted({f"{r.method} {r.leaf}" for r in report.failures}))


def _jax_verdict(f, args, order=1) -> str:
    try:
        check_grads(f, args, order=order, modes=["rev"])
        return "missed"
    except AssertionError:
        return "caught (no leaf named)"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=20, help="random inputs per function (20)")
    p.add_argument("--precision", action="store_true",
                   help="only the non-smooth and low-precision zoos")  # fmt: skip
    args = p.parse_args()
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    console = Console(width=150)
    if args.precision:
        print_precision_tables(console, args.seeds, Table, torch)
        return
    t = Table(title="Features")
    for col in ("feature", "functional_nn", "jax check_grads", "torch gradcheck"):
        t.add_column(col)
    for row in FEATURES:
        t.add_row(*row)
    console.print(t)

    rows = zoo_table(args.seeds)
    t = Table(title=f"Zoo: 11 functions x {args.seeds} seeds; planted: largest entry 5% off "
                    "(float32), 1% (float64), through a custom rule")  # fmt: skip
    for col in ("checker", "f32 false failures", "f32 caught", "f64 false failures",
                "f64 caught", "f32 first verdict", "f32 next (median)"):  # fmt: skip
        t.add_column(col)
    for r in rows:
        t.add_row(r["tool"], f"{r['float32 false failures']:.1%}", f"{r['float32 caught']:.1%}",
                  f"{r['float64 false failures']:.1%}", f"{r['float64 caught']:.1%}",
                  f"{1e3 * r['float32 first s']:.0f} ms",
                  f"{1e3 * r['float32 median s']:.1f} ms")  # fmt: skip
    if torch is None:
        t.caption = "torch not installed: torch.autograd.gradcheck left out"
    console.print(t)

    t = Table(title=f"Forward mode, the same zoo x {args.seeds} seeds; planted through a "
                    "custom_jvp tangent rule / an autograd.Function's jvp")  # fmt: skip
    for col in ("checker", "f32 false failures", "f32 caught", "f64 false failures",
                "f64 caught", "f32 first verdict", "f32 next (median)"):  # fmt: skip
        t.add_column(col)
    for r in zoo_table(args.seeds, forward_tools()):
        t.add_row(r["tool"], f"{r['float32 false failures']:.1%}", f"{r['float32 caught']:.1%}",
                  f"{r['float64 false failures']:.1%}", f"{r['float64 caught']:.1%}",
                  f"{1e3 * r['float32 first s']:.0f} ms",
                  f"{1e3 * r['float32 median s']:.1f} ms")  # fmt: skip
    t.caption = forward_caption(_torch_zoo() if torch is not None else None, N)
    console.print(t)
    print_complex_tables(console, args.seeds, Table)
    print_precision_tables(console, args.seeds, Table, torch)

    for dtype in ("float32", "float64"):
        t = Table(title=f"Planted bugs ({dtype})")
        for col in ("bug", "functional_nn", "jax check_grads"):
            t.add_column(col)
        for r in bug_table(dtype):
            t.add_row(r["bug"], r["ours"], r["jax"])
        console.print(t)


if __name__ == "__main__":
    main()
