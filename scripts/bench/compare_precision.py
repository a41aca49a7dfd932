"""compare_checkers' non-smooth and low-precision zoos (issue 34, item 5).

Non-smooth, float32: functions of x in R^9 whose kinks the steps can reach (every hidden unit
moves with every entry of x): a ReLU and a leaky-ReLU MLP, a max-pool, abs, a hinge loss and a
ReLU CNN (x the kernel of a 1-D convolution). Low precision: bfloat16 and float16 parameters, a
float32 parameter computed in bfloat16 (mixed precision), and a fused bfloat16 attention with
its backward by hand, checked against the plain attention as ``baseline`` (functional_nn) or
alone (the others, which take no baseline). Planted: the largest gradient entry off (5% in
float32, 15% in bfloat16, 3% in float16), through a custom rule; for the attention, dq 10% off.
Each cell: the rate of right gradients failed, the rate of planted bugs caught.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import functional_nn as fnn

N = 9
_RNG = np.random.default_rng(11)
A = _RNG.standard_normal((32, N)) / 2  # every unit sees every entry of x
B = _RNG.standard_normal(32) / 4
Y = np.sign(_RNG.standard_normal(32))
SIGNAL = _RNG.standard_normal(40)
OFF = {"float32": 0.05, "bfloat16": 0.15, "float16": 0.03}


def nonsmooth_jax() -> dict:
    def a(x):
        return jnp.asarray(A, x.dtype) @ x

    def b(x):
        return jnp.asarray(B, x.dtype)

    return {
        "relu mlp": lambda x: jnp.sum(jax.nn.softplus(jax.nn.relu(a(x)) * b(x))),
        "leaky relu mlp": lambda x: jnp.sum(jax.nn.softplus(jax.nn.leaky_relu(a(x)) * b(x))),
        "max-pool": lambda x: jnp.sum(b(x)[:16] * jnp.max(a(x).reshape(16, 2), axis=1)),
        "abs": lambda x: jnp.sum(jnp.abs(a(x)) * b(x)),
        "hinge": lambda x: jnp.sum(jax.nn.relu(1 - jnp.asarray(Y, x.dtype) * a(x))),
        "relu cnn": lambda x: jnp.sum(
            jax.nn.softplus(
                jax.nn.relu(jnp.convolve(jnp.asarray(SIGNAL, x.dtype), x, mode="valid"))
            )
        ),  # fmt: skip
    }


def nonsmooth_torch(torch) -> dict:
    F = torch.nn.functional

    def a(x):
        return torch.as_tensor(A, dtype=x.dtype) @ x

    def b(x):
        return torch.as_tensor(B, dtype=x.dtype)

    def conv(x):  # jnp.convolve flips the kernel: the same here
        s = torch.as_tensor(SIGNAL, dtype=x.dtype)[None, None]
        return F.conv1d(s, torch.flip(x, (0,))[None, None])[0, 0]

    return {
        "relu mlp": lambda x: F.softplus(F.relu(a(x)) * b(x)).sum(),
        "leaky relu mlp": lambda x: F.softplus(F.leaky_relu(a(x)) * b(x)).sum(),
        "max-pool": lambda x: (b(x)[:16] * a(x).reshape(16, 2).max(dim=1).values).sum(),
        "abs": lambda x: (a(x).abs() * b(x)).sum(),
        "hinge": lambda x: F.relu(1 - torch.as_tensor(Y, dtype=x.dtype) * a(x)).sum(),
        "relu cnn": lambda x: F.softplus(F.relu(conv(x))).sum(),
    }


def low_precision_jax() -> dict:
    """name -> (f, parameter dtype): programs in bfloat16 and float16, and mixed precision."""

    def mlp(x, compute):
        h = jnp.tanh(jnp.asarray(A, jnp.float32).astype(compute) @ x.astype(compute))
        return jnp.sum(jax.nn.softplus(h * jnp.asarray(B, jnp.float32).astype(compute)))

    return {
        "tanh mlp, bfloat16": (lambda x: mlp(x, jnp.bfloat16), "bfloat16"),
        "tanh mlp, float16": (lambda x: mlp(x, jnp.float16), "float16"),
        "float32 computed in bfloat16": (lambda x: mlp(x, jnp.bfloat16), "float32"),
    }


def low_precision_torch(torch) -> dict:
    F = torch.nn.functional

    def mlp(x):
        h = torch.tanh(torch.as_tensor(A, dtype=x.dtype) @ x)
        return F.softplus(h * torch.as_tensor(B, dtype=x.dtype)).sum()

    return {"tanh mlp, bfloat16": (mlp, torch.bfloat16), "tanh mlp, float16": (mlp, torch.float16)}


def planted(f, off):
    """``f`` through a custom_vjp whose gradient has its largest entry ``off`` too large."""

    @jax.custom_vjp
    def h(x):
        return f(x)

    def bwd(x, ct):
        g = jax.grad(f)(x)
        i = jnp.argmax(jnp.abs(g))
        return (ct * g.at[i].multiply(1 + off).astype(g.dtype),)

    h.defvjp(lambda x: (f(x), x), bwd)
    return h


def torch_planted(torch, f, off):
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


def ours(f, x, baseline=None) -> bool:
    return fnn.check_grad(f, x, baseline=baseline).ok


def theirs(f, x) -> bool:
    try:
        check_grads(f, (x,), order=1, modes=["rev"])
        return True
    except (AssertionError, TypeError, ValueError):
        return False


def _rates(check, f, h, xs) -> tuple[float, float]:
    false = sum(not check(f, x) for x in xs)
    caught = sum(not check(h, x) for x in xs)
    return false / len(xs), caught / len(xs)


def nonsmooth_rows(seeds: int, torch=None) -> list[tuple]:
    """(function, checker, false failures, caught), float32, ``seeds`` random x each."""
    rows = []
    xs = [jax.random.normal(jax.random.key(s), (N,), jnp.float32) for s in range(seeds)]
    tz = nonsmooth_torch(torch) if torch is not None else {}
    for name, f in nonsmooth_jax().items():
        h = planted(f, OFF["float32"])
        rows.append((name, "functional_nn.check_grad", *_rates(ours, f, h, xs)))
        rows.append((name, "jax check_grads", *_rates(theirs, f, h, xs)))
        if name in tz:
            g, hg = tz[name], torch_planted(torch, tz[name], OFF["float32"])
            ts = [torch.tensor(np.asarray(x), dtype=torch.float32) for x in xs]

            def verdict(fn, t):
                t = t.clone().requires_grad_(True)
                try:
                    return bool(torch.autograd.gradcheck(fn, (t,), raise_exception=False))
                except (RuntimeError, ValueError):
                    return False

            rows.append((name, "torch gradcheck", *_rates(verdict, g, hg, ts)))
    return rows


def low_precision_rows(seeds: int, torch=None) -> list[tuple]:
    rows = []
    tz = low_precision_torch(torch) if torch is not None else {}
    for name, (f, dtype) in low_precision_jax().items():
        xs = [jax.random.normal(jax.random.key(s), (N,), dtype) for s in range(seeds)]
        compute = "bfloat16" if "bfloat16" in name else dtype
        h = planted(f, OFF[compute])
        rows.append((name, "functional_nn.check_grad", *_rates(ours, f, h, xs)))
        rows.append((name, "jax check_grads", *_rates(theirs, f, h, xs)))
        if name in tz:
            g, tdtype = tz[name]
            hg = torch_planted(torch, g, OFF[compute])
            ts = [torch.tensor(np.asarray(x, np.float32)).to(tdtype) for x in xs]

            def verdict(fn, t):
                t = t.clone().requires_grad_(True)
                try:
                    return bool(torch.autograd.gradcheck(fn, (t,), raise_exception=False))
                except (RuntimeError, ValueError):
                    return False

            rows.append((name, "torch gradcheck", *_rates(verdict, g, hg, ts)))
    rows += _attention_rows(seeds)
    return rows


# -- the fused attention, its backward by hand, against the plain one -----------------------

T, D = 8, 16
XA = np.random.default_rng(3).standard_normal((T, D))


def _plain(q, k, v):
    s = (q @ k.T) * (1 / np.sqrt(D))
    return jax.nn.softmax(s.astype(jnp.float32), axis=-1).astype(q.dtype) @ v


def _fused(dq_scale):
    @jax.custom_vjp
    def attn(q, k, v):
        return _plain(q, k, v)

    def fwd(q, k, v):
        p = jax.nn.softmax(((q @ k.T) * (1 / np.sqrt(D))).astype(jnp.float32), axis=-1)
        return p.astype(q.dtype) @ v, (q, k, v, p)

    def bwd(res, do):
        q, k, v, p = res
        dv = p.astype(do.dtype).T @ do
        dp = (do @ v.T).astype(jnp.float32)
        ds = (p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True)) / np.sqrt(D)).astype(q.dtype)
        return (dq_scale * (ds @ k)).astype(q.dtype), (ds.T @ q).astype(k.dtype), dv

    attn.defvjp(fwd, bwd)
    return attn


def _attention_loss(attn):
    def f(p):
        x = jnp.asarray(XA, jnp.bfloat16)
        return jnp.sum(jnp.tanh(attn(x @ p["wq"], x @ p["wk"], x @ p["wv"]).astype(jnp.float32)))

    return f


def _attention_rows(seeds: int) -> list[tuple]:
    right, wrong = _attention_loss(_fused(1.0)), _attention_loss(_fused(1.1))
    base = _attention_loss(_plain)
    ps = []
    for s in range(seeds):
        r = np.random.default_rng(s)
        ps.append({n: jnp.asarray(r.standard_normal((D, D)) / 4, jnp.bfloat16)
                   for n in ("wq", "wk", "wv")})  # fmt: skip
    name = "fused attention, bfloat16 (dq 10% off)"
    ours_rates = (sum(not ours(right, p, base) for p in ps) / seeds,
                  sum(not ours(wrong, p, base) for p in ps) / seeds)  # fmt: skip
    return [(name, "functional_nn.check_grad (baseline=plain)", *ours_rates),
            (name, "jax check_grads", *_rates(theirs, right, wrong, ps))]  # fmt: skip


def print_precision_tables(console, seeds: int, Table, torch=None) -> None:
    for title, rows in (
        (f"Non-smooth zoo, float32, {seeds} seeds; planted: largest entry 5% off",
         nonsmooth_rows(seeds, torch)),
        (f"Low precision, {seeds} seeds; planted: largest entry 15% off (bfloat16), 3% "
         "(float16), through a custom rule", low_precision_rows(seeds, torch)),
    ):  # fmt: skip
        t = Table(title=title)
        for col in ("function", "checker", "false failures", "caught"):
            t.add_column(col)
        for name, tool, false, caught in rows:
            t.add_row(name, tool, f"{false:.0%}", f"{caught:.0%}")
        console.print(t)
