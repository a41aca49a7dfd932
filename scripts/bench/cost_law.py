"""Sections ``cost_law`` and ``vectorization``: finite differences against backprop as P grows,
and vmapped chunks of directions against a Python loop of jitted evaluations."""

from __future__ import annotations

import functools

import jax

import functional_nn as fnn
from bench.common import Section, problem
from bench.library import directional_derivatives, random_directions, ravel_params, step_sizes
from bench.render import fmt, table
from bench.timing import interleaved, run_k

# (P label, sizes): networks of about 10^2 .. 10^5 parameters for the cost law
COST_LAW = [
    ("1e2", (8, 8, 4)),
    ("1e3", (32, 24, 8)),
    ("1e4", (100, 90, 10)),
    ("1e5", (300, 300, 30)),
]
CENTRAL_UP_TO = 20_000  # central differences: 2P evaluations
LOCAL_UP_TO = 20_000  # local differences materialize (H_l, H_l H_{l-1}) per sample: not beyond
ONE_ROUND_ABOVE = 5_000  # bigger rows: compiled ahead, one round of timing
LOOP_COLUMNS = 256  # the Python loop is timed over this many columns and scaled to P


def central(net, loss, chunk_size=None):
    """Jitted central differences of the objective, ``(params, x, y) -> grads``."""
    J = fnn.objective(net, loss)

    def grad(params, x, y):
        return fnn.finite_difference_grad(lambda q: J(q, x, y), params, chunk_size=chunk_size)

    return jax.jit(grad)


def _directional(net, loss, v):
    return jax.jit(lambda p, x, y: directional_derivatives(net, loss, p, x, y, v))


def bench_cost_law(dtype, batch: int, quick: bool) -> list[dict]:
    """Central, local and directional differences against backprop, as P grows.

    Each time is taken in interleaved rounds with backprop, so every ratio is taken in the
    same run; FD / (P x backprop) is the lecture's claim made visible. Above
    ``ONE_ROUND_ABOVE`` parameters, central and local differences (seconds a call) are
    compiled ahead and run once, against the median backprop of the same row (their ratios
    are in the thousands, far above the noise); central differences stop at ``CENTRAL_UP_TO``
    (2P = 2e5 evaluations at 1e5 would take minutes, and their ratio to P backprops holds
    from 1e3 to 1e4), local differences at ``LOCAL_UP_TO``.
    """
    rows = []
    for _, sizes in COST_LAW[:2] if quick else COST_LAW:
        net = fnn.Network(sizes, hidden="tanh")
        params, x, y = problem(net, "bce", batch, dtype)
        P = net.num_params()
        v = random_directions(params, 16, jax.random.key(1))
        fs = {
            "backprop": jax.jit(functools.partial(fnn.backprop, net, "bce")),
            "directional": _directional(net, "bce", v),
        }
        if P <= CENTRAL_UP_TO:
            fs["central"] = central(net, "bce")
        if P <= LOCAL_UP_TO:
            fs["local"] = jax.jit(functools.partial(fnn.local_finite_differences, net, "bce"))
        if P <= ONE_ROUND_ABOVE:
            r = interleaved(fs, params, x, y, pairs=3, max_s=8)
        else:  # backprop and directional interleaved; the slow ones compiled ahead, run once
            slow = {n: fs.pop(n).lower(params, x, y).compile() for n in ("central", "local")
                    if n in fs}  # fmt: skip
            r = interleaved(fs, params, x, y, pairs=5)
            for n, f in slow.items():
                r["s"][n] = run_k(f, (params, x, y))
                r["ratio"][n] = r["s"][n] / r["s"]["backprop"]
            fs.update(slow)
        rows.append(
            {
                "P": P,
                "sizes": list(sizes),
                "batch": batch,
                "rounds": r["rounds"],
                "backprop_ms": 1e3 * r["s"]["backprop"],
                "central_ms": 1e3 * r["s"]["central"] if "central" in fs else None,
                "central_over_P_backprop": r["ratio"]["central"] / P if "central" in fs else None,
                "directional16_ms": 1e3 * r["s"]["directional"],
                "directional16_over_backprop": r["ratio"]["directional"],
                "local_ms": 1e3 * r["s"]["local"] if "local" in fs else None,
                "local_over_backprop": r["ratio"]["local"] if "local" in fs else None,
            }
        )
    return rows


def python_loop(net, loss, params, x, y, columns: int = LOOP_COLUMNS):
    """Central differences as a user's Python loop of jitted single evaluations: 2 calls per
    column, over the first ``columns`` columns (each column costs the same)."""
    J = fnn.objective(net, loss)
    theta, unravel = ravel_params(params)
    h = step_sizes(theta, "central", fnn.default_eps("central", theta.dtype))  # theta +- h exact
    one = jax.jit(lambda t: J(unravel(t), x, y))

    def loop(*_):
        return [
            (one(theta.at[i].add(h[i])) - one(theta.at[i].add(-h[i]))) / (2 * h[i])
            for i in range(min(columns, theta.shape[0]))
        ]

    return loop


def bench_vectorization(dtype, batch: int, quick: bool) -> list[dict]:
    """Vmapped chunks of directions against a Python loop of jitted single evaluations, and
    the chunk size: central differences, same problem, interleaved. The loop is timed over
    ``LOOP_COLUMNS`` columns and scaled to all P (its cost per column does not depend on P);
    rows above ``ONE_ROUND_ABOVE`` parameters get one round."""
    rows = []
    chunks = (32,) if quick else (1, 8, 32, 128)
    for _, sizes in COST_LAW[:2] if quick else COST_LAW[:3]:
        net = fnn.Network(sizes, hidden="tanh")
        params, x, y = problem(net, "bce", batch, dtype)
        P = net.num_params()
        cols = min(P, LOOP_COLUMNS)
        fs = {"loop": python_loop(net, "bce", params, x, y, cols)}
        if P <= ONE_ROUND_ABOVE:
            fs.update({c: central(net, "bce", chunk_size=c) for c in chunks})
            r = interleaved(fs, params, x, y, pairs=1 if quick else 3, max_s=6)
        else:  # the chunked programs compiled ahead, one round
            fs.update({c: central(net, "bce", c).lower(params, x, y).compile() for c in chunks})
            r = interleaved(fs, params, x, y, pairs=1, warm=("loop",))
        scale = P / cols
        row = {"P": P, "loop_columns_timed": cols, "loop_ms": 1e3 * scale * r["s"]["loop"]}
        for c in chunks:
            row[f"chunk{c}_ms"] = 1e3 * r["s"][c]
            row[f"loop_over_chunk{c}"] = scale / r["ratio"][c]
        rows.append(row)
    return rows


def run_cost_law(ctx) -> dict:
    return {"cost_law": bench_cost_law(ctx.dtype, 64, ctx.quick)}


def render_cost_law(ctx, out: dict) -> None:
    rows = [
        (
            str(r["P"]),
            f"{r['backprop_ms']:.3f}",
            fmt(r["central_ms"], ".1f", f"- (2P = {2 * r['P']:.0e} evaluations)"),
            fmt(r["central_over_P_backprop"], ".2f"),
            fmt(r["local_ms"], ".1f"),
            fmt(r["local_over_backprop"], ".0f"),
            f"{r['directional16_ms']:.2f}",
            f"{r['directional16_over_backprop']:.1f}",
        )
        for r in out["cost_law"]
    ]
    ctx.console.print(
        table(
            "the cost law: finite differences against back-propagation (float32, N=64)",
            (
                "P",
                "backprop ms",
                "central ms",
                "central / (P x backprop)",
                "local ms",
                "local / backprop",
                "directional k=16 ms",
                "directional / backprop",
            ),
            rows,
            left=0,
        )
    )


def run_vectorization(ctx) -> dict:
    return {"vectorization": bench_vectorization(ctx.dtype, 64, ctx.quick)}


def render_vectorization(ctx, out: dict) -> None:
    vec = out["vectorization"]
    cols = [k for k in vec[0] if k.startswith("loop_over_chunk")]
    ctx.console.print(
        table(
            f"central differences: Python loop of jitted evaluations / vmapped chunks (the loop "
            f"timed over {LOOP_COLUMNS} columns, scaled to P)",
            ("P", "loop ms", *(f"chunk {k.removeprefix('loop_over_chunk')}" for k in cols)),
            [(str(r["P"]), f"{r['loop_ms']:.1f}", *(f"{r[k]:.1f}x" for k in cols)) for r in vec],
            left=0,
        )
    )


COST_LAW_SECTION = Section("cost_law", run_cost_law, render_cost_law)
VECTORIZATION = Section("vectorization", run_vectorization, render_vectorization)
