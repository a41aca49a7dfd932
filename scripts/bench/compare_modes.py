"""Forward mode and complex inputs for scripts/compare_checkers.py.

Forward mode: functional_nn's check_jvp, ``check_grads(modes=["fwd"])`` and torch's
``gradcheck(check_forward_ad=True, check_backward_ad=False)`` on the reverse-mode zoo, the bug
planted in the tangent rule: a ``jax.custom_jvp`` and a ``torch.autograd.Function``'s ``jvp``
whose gradient has its largest entry ``off`` too large.

Complex inputs (:func:`complex_table`): a zoo of functions of a complex vector ``z``, in
complex64 and complex128, random inputs per seed. Real-valued ones go to check_grad, the
complex-valued ones (and ``abs``) to check_vjp; jax's ``check_grads(modes=["rev"])`` and
torch's ``gradcheck`` (Wirtinger calculus) take them all. Two bugs are planted through a custom
rule (a ``jax.custom_vjp``, a ``torch.autograd.Function``): the gradient (VJP) conjugated --
JAX's convention in torch, torch's in JAX; ``jax.grad(f)(z)`` is ``df/dx - i df/dy``, torch's
``z.grad`` is its conjugate -- and the largest entry 5% (complex64) / 1% (complex128) off
(for a vector output, the entry at the largest ``|z|``). Every tool runs with its defaults.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

import functional_nn as fnn

try:
    import torch
except Exception:  # noqa: BLE001 -- torch is optional
    torch = None

COMPLEX_OFF = {"complex64": 0.05, "complex128": 0.01}
BUGS = ("conjugated", "largest entry off")
SHORT = {"functional_nn check_grad / check_vjp": "functional_nn", "jax.test_util.check_grads":
         "jax check_grads", "torch.autograd.gradcheck": "torch gradcheck"}  # fmt: skip
NZ = 6
_rng = np.random.default_rng(0)
W = (_rng.normal(size=(4, NZ)) + 1j * _rng.normal(size=(4, NZ))) / np.sqrt(2 * NZ)
B = _rng.normal(size=4) + 1j * _rng.normal(size=4)
FWD_KW = dict(check_forward_ad=True, check_backward_ad=False, check_undefined_grad=False,
              check_batched_grad=False, raise_exception=False)  # fmt: skip


# -- forward mode -------------------------------------------------------------------------------


def jax_planted_jvp(f, off):
    """``f`` through a custom_jvp whose tangent rule has the gradient's largest entry ``off``
    too large: forward mode's counterpart of compare_checkers' ``jax_planted``."""

    @jax.custom_jvp
    def h(x):
        return f(x)

    @h.defjvp
    def h_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        g = jax.grad(f)(x)
        i = jnp.argmax(jnp.abs(g))
        return f(x), jnp.dot(g.at[i].multiply(1 + off), t)

    return h


def _torch_grad(f, x, ct=None):
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xx), xx, ct)
    return g


def torch_planted_jvp(f, off):
    """``f`` as a torch.autograd.Function (setup_context style) whose ``jvp`` has the gradient's
    largest entry ``off`` too large; it has no backward, which the forward check never asks."""

    class Planted(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return f(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def jvp(ctx, t):
            (x,) = ctx.saved_tensors
            g = _torch_grad(f, x).clone()
            i = torch.argmax(g.abs())
            g[i] = g[i] * (1 + off)
            return (g * t).sum()

    return Planted.apply


def ours_fwd(f, x) -> bool:
    return fnn.check_jvp(f, x).ok


def jax_tool_fwd(f, x) -> bool:
    try:
        check_grads(f, (x,), order=1, modes=["fwd"])
        return True
    except AssertionError:
        return False


def torch_tool_fwd(f, x) -> bool:
    """torch's forward-mode gradcheck; an op without a forward-AD formula raises, a failure."""
    t = torch.tensor(np.asarray(x), requires_grad=True)
    try:
        return bool(torch.autograd.gradcheck(f, (t,), **FWD_KW))
    except (RuntimeError, NotImplementedError):
        return False


def torch_forward_unsupported(zoo: dict, n: int) -> list[str]:
    """The zoo's torch functions whose forward AD raises (in float64, at one input)."""
    x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    out = []
    for name, f in zoo.items():
        try:
            with torch.autograd.forward_ad.dual_level():
                f(torch.autograd.forward_ad.make_dual(x, torch.ones_like(x)))
        except (RuntimeError, NotImplementedError) as e:
            out.append(f"{name} ({type(e).__name__})")
    return out


def forward_caption(zoo: dict | None, n: int) -> str:
    if zoo is None:
        return "torch not installed: its check_forward_ad left out"
    bad = torch_forward_unsupported(zoo, n)
    if not bad:
        return f"torch's forward AD has a formula for all {len(zoo)} zoo functions"
    return "torch forward AD unsupported (counted as failures): " + ", ".join(bad)


# -- complex inputs -----------------------------------------------------------------------------


def jax_complex_zoo() -> dict:
    """name -> (f, kind): kind "grad" (real-valued f, check_grad) or "vjp" (check_vjp)."""

    def c(a, z):
        return jnp.asarray(a, z.dtype)

    return {
        "sum |z|^2": (lambda z: jnp.sum(jnp.abs(z) ** 2), "grad"),
        "sum Re z^3": (lambda z: jnp.sum(jnp.real(z**3)), "grad"),
        "sum |Wz+b|^2": (lambda z: jnp.sum(jnp.abs(c(W, z) @ z + c(B, z)) ** 2), "grad"),
        "sum Re(exp(z) conj z)": (lambda z: jnp.sum(jnp.real(jnp.exp(z) * jnp.conj(z))), "grad"),
        "log sum |z|": (lambda z: jnp.log(jnp.sum(jnp.abs(z))), "grad"),
        "z^2": (lambda z: z**2, "vjp"),
        "conj z": (jnp.conj, "vjp"),
        "|z|": (jnp.abs, "vjp"),
        "W z": (lambda z: c(W, z) @ z, "vjp"),
    }


def torch_complex_zoo() -> dict:
    def c(a, z):
        return torch.as_tensor(a, dtype=z.dtype)

    return {
        "sum |z|^2": (lambda z: (z.abs() ** 2).sum(), "grad"),
        "sum Re z^3": (lambda z: (z**3).real.sum(), "grad"),
        "sum |Wz+b|^2": (lambda z: ((c(W, z) @ z + c(B, z)).abs() ** 2).sum(), "grad"),
        "sum Re(exp(z) conj z)": (lambda z: (torch.exp(z) * z.conj()).real.sum(), "grad"),
        "log sum |z|": (lambda z: torch.log(z.abs().sum()), "grad"),
        "z^2": (lambda z: z**2, "vjp"),
        "conj z": (torch.conj_physical, "vjp"),
        "|z|": (torch.abs, "vjp"),
        "W z": (lambda z: c(W, z) @ z, "vjp"),
    }


def jax_complex_planted(f, kind, bug, off):
    """``f`` through a custom_vjp whose VJP is conjugated, or has its largest entry ``off``
    too large (the largest gradient entry for a real-valued ``f``, else at the largest |z|)."""

    @jax.custom_vjp
    def h(z):
        return f(z)

    def bwd(z, ct):
        (g,) = jax.vjp(f, z)[1](ct)
        if bug == "conjugated":
            return (jnp.conj(g),)
        i = jnp.argmax(jnp.abs(jax.grad(f)(z) if kind == "grad" else z))
        return (g.at[i].multiply(1 + off),)

    h.defvjp(lambda z: (f(z), z), bwd)
    return h


def torch_complex_planted(f, kind, bug, off):
    """The same bugs in torch's own convention, through a torch.autograd.Function."""

    class Planted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return f(z)

        @staticmethod
        def backward(ctx, ct):
            (z,) = ctx.saved_tensors
            g = _torch_grad(f, z, ct)
            if bug == "conjugated":
                return torch.conj_physical(g)
            g = g.clone()
            i = torch.argmax((g if kind == "grad" else z).abs())
            g[i] = g[i] * (1 + off)
            return g

    return Planted.apply


def ours_complex(f, kind, z) -> bool:
    return (fnn.check_grad if kind == "grad" else fnn.check_vjp)(f, z).ok


def jax_tool_complex(f, kind, z) -> bool:
    try:
        check_grads(f, (z,), order=1, modes=["rev"])
        return True
    except AssertionError:
        return False


def torch_tool_complex(f, kind, z) -> bool:
    t = torch.tensor(np.asarray(z), requires_grad=True)
    try:
        return bool(torch.autograd.gradcheck(f, (t,), raise_exception=False))
    except RuntimeError:
        return False


def complex_tools() -> dict:
    """Checker name -> (verdict(f, kind, z), zoo, planted(f, kind, bug, off))."""
    tools = {
        "functional_nn check_grad / check_vjp": (ours_complex, jax_complex_zoo(),
                                                 jax_complex_planted),
        "jax.test_util.check_grads": (jax_tool_complex, jax_complex_zoo(), jax_complex_planted),
    }  # fmt: skip
    if torch is not None:
        tools["torch.autograd.gradcheck"] = (torch_tool_complex, torch_complex_zoo(),
                                             torch_complex_planted)  # fmt: skip
    return tools


def complex_input(seed: int, dtype: str) -> np.ndarray:
    """A standard complex normal vector of NZ entries (NumPy, so every tool starts alike)."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (NZ,), dtype))


def complex_table(seeds: int, tools: dict | None = None) -> list[dict]:
    """Per checker and complex dtype: the rate of right gradients failed (false failures), the
    rate of each planted bug caught, the first (cold) and median later time to a verdict, and
    where (function: count) the false failures and misses fell."""
    tools = complex_tools() if tools is None else tools
    rows = []
    for tool, (check, zoo, plant) in tools.items():
        row = {"tool": tool}
        for dtype in ("complex64", "complex128"):
            false, caught, n, times, first = 0, dict.fromkeys(BUGS, 0), 0, [], []
            where = {"false failures": {}, **{f"{b} missed": {} for b in BUGS}}
            for name, (f, kind) in zoo.items():
                planted = {b: plant(f, kind, b, COMPLEX_OFF[dtype]) for b in BUGS}
                for seed in range(seeds + 1):  # seed 0 twice: its first call is the cold one
                    z = complex_input(max(seed - 1, 0), dtype)
                    z = z if check is torch_tool_complex else jnp.asarray(z)
                    start = time.perf_counter()
                    ok = check(f, kind, z)
                    (first if seed == 0 else times).append(time.perf_counter() - start)
                    if seed == 0:
                        continue
                    n += 1
                    false += not ok
                    _count(where["false failures"], name, not ok)
                    for b in BUGS:
                        hit = not check(planted[b], kind, z)
                        caught[b] += hit
                        _count(where[f"{b} missed"], name, not hit)
            row[f"{dtype} false failures"] = false / n
            for b in BUGS:
                row[f"{dtype} {b} caught"] = caught[b] / n
            row[f"{dtype} median s"] = statistics.median(times)
            row[f"{dtype} first s"] = statistics.median(first)
            row[f"{dtype} where"] = where
            row["cases"] = n
        rows.append(row)
    return rows


def _count(d: dict, name: str, hit: bool):
    if hit:
        d[name] = d.get(name, 0) + 1


def print_complex_tables(console, seeds: int, table_cls):
    """The complex table and, below it, where its false failures and misses fell."""
    rows = complex_table(seeds)
    zoo = jax_complex_zoo()
    n_grad = sum(kind == "grad" for _, kind in zoo.values())
    t = table_cls(title=f"Complex inputs: {len(zoo)} functions of z in C^{NZ} ({n_grad} "
                        f"real-valued) x {seeds} seeds; planted: the VJP conjugated, the largest "
                        "entry 5% (c64) / 1% (c128) off")  # fmt: skip
    t.add_column("checker", no_wrap=True)
    for d, off in (("c64", "5%"), ("c128", "1%")):
        for col in ("false failures", "conj caught", f"{off} off caught"):
            t.add_column(f"{d} {col}")
    for col in ("c64 first verdict", "c64 next (median)", "c128 next (median)"):
        t.add_column(col)
    for r in rows:
        cells = [SHORT.get(r["tool"], r["tool"])]
        for d in ("complex64", "complex128"):
            cells += [f"{r[f'{d} false failures']:.1%}"]
            cells += [f"{r[f'{d} {b} caught']:.1%}" for b in BUGS]
        cells += [f"{1e3 * r['complex64 first s']:.0f} ms",
                  f"{1e3 * r['complex64 median s']:.1f} ms",
                  f"{1e3 * r['complex128 median s']:.1f} ms"]  # fmt: skip
        t.add_row(*cells)
    t.caption = (
        "functional_nn: check_grad for a real-valued f, check_vjp for the rest; every "
        "tool at its defaults; a tool failing every right gradient 'catches' every bug"
    )
    if torch is None:
        t.caption += "; torch not installed: torch.autograd.gradcheck left out"
    console.print(t)

    t = table_cls(title=f"Complex inputs: where (function: cases out of {seeds})")
    t.add_column("checker", no_wrap=True)
    for col in ("dtype", "false failures", "conjugate missed", "off missed"):
        t.add_column(col)
    for r in rows:
        for d in ("complex64", "complex128"):
            w = r[f"{d} where"]
            cells = [", ".join(f"{k}: {v}" for k, v in w[key].items()) or "-"
                     for key in ("false failures", *(f"{b} missed" for b in BUGS))]  # fmt: skip
            t.add_row(SHORT.get(r["tool"], r["tool"]), d, *cells)
    console.print(t)
    return rows
