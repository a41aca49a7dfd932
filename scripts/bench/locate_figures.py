"""locate's no-culprit figures (issue 35): right programs, many seeds, every equation checked.

- an MLP with ``jax.nn.relu``, ``softplus``, ``log_softmax`` and two right rules of the
  user's (a ``custom_vjp`` soft clip and a ``custom_vjp`` scaled tanh), float32 and float64;
- the non-smooth and low-precision zoos of :mod:`bench.compare_precision` (ReLU, leaky ReLU,
  max-pool, abs, hinge, ReLU CNN in float32; bfloat16, float16 and mixed precision);
- the lecture's networks (:class:`functional_nn.Network`): logistic regression, multi-output
  logistic regression, sigmoid and ReLU deep networks with BCE, a regression network with MSE.

Each is ``fnn.locate(f, params, primitives=True)`` at ``--seeds`` random points: every custom
rule, ``stop_gradient`` and JAX primitive of the program checked against differences of its
own primal. A right program must give no culprit; a cell counts the programs that gave one.

    cd scripts && python -m bench.locate_figures            # 10 seeds
    cd scripts && python -m bench.locate_figures --seeds 2
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp

import functional_nn as fnn
from bench import compare_precision as zoo


def _rules():
    @jax.custom_vjp
    def softclip(x):
        return x / (1 + jnp.abs(x))

    softclip.defvjp(lambda x: (softclip(x), x), lambda x, c: (c / (1 + jnp.abs(x)) ** 2,))

    @jax.custom_vjp
    def scaled_tanh(x, a):
        return jnp.tanh(x) * a

    def bwd(res, c):
        x, a = res
        return c * a * (1 - jnp.tanh(x) ** 2), jnp.sum(c * jnp.tanh(x))

    scaled_tanh.defvjp(lambda x, a: (scaled_tanh(x, a), (x, a)), bwd)
    return softclip, scaled_tanh


SOFTCLIP, SCALED_TANH = _rules()


def mlp(p):
    h = jax.nn.relu(p["x"] @ p["w1"])
    h = SCALED_TANH(SOFTCLIP(h) @ p["w2"], p["a"])
    h = jax.nn.softplus(h @ p["w3"])
    return jnp.sum(jax.nn.log_softmax(h))


def mlp_params(dtype, seed):
    k = jax.random.split(jax.random.key(seed), 4)
    return {
        "x": jax.random.normal(k[0], (5, 4), dtype),
        "w1": jax.random.normal(k[1], (4, 6), dtype),
        "w2": jax.random.normal(k[2], (6, 6), dtype),
        "w3": jax.random.normal(k[3], (6, 3), dtype),
        "a": jnp.asarray(1.5, dtype),
    }


def lecture_programs():
    """name -> (network, loss): the lecture's models."""
    N = fnn.Network
    return {
        "logistic regression, bce": (N((4, 1)), "bce"),
        "multi-output logistic, bce": (N((4, 3)), "bce"),
        "sigmoid net 4-5-3-2, bce": (N((4, 5, 3, 2)), "bce"),
        "relu net 4-5-3-2, bce": (N((4, 5, 3, 2), hidden="relu"), "bce"),
        "regression net 4-5-1, mse": (N((4, 5, 1), output="identity"), "mse"),
    }


def cases(seeds: int):
    """(group, name, f, params) of every program at every seed."""
    for dtype in ("float32", "float64"):
        for s in range(seeds):
            yield "mlp, relu softplus log_softmax and two rules", dtype, mlp, mlp_params(dtype, s)
    for name, f in zoo.nonsmooth_jax().items():
        for s in range(seeds):
            yield "non-smooth zoo", name, f, jax.random.normal(jax.random.key(s), (zoo.N,))
    for name, (f, dtype) in zoo.low_precision_jax().items():
        for s in range(seeds):
            yield (
                "low-precision zoo",
                name,
                f,
                jax.random.normal(jax.random.key(s), (zoo.N,), dtype),
            )
    for name, (net, loss) in lecture_programs().items():
        J = fnn.objective(net, loss)
        for s in range(seeds):
            k = jax.random.split(jax.random.key(s), 3)
            x = jax.random.normal(k[1], (6, net.sizes[0]), jnp.float64)
            shape = (6, net.sizes[-1])
            y = (jax.random.uniform(k[2], shape) > 0.5).astype(jnp.float64) if loss == "bce" else (
                jax.random.normal(k[2], shape, jnp.float64))  # fmt: skip
            params = net.init(k[0], jnp.float64)
            yield "lecture networks", name, (lambda p, J=J, x=x, y=y: J(p, x, y)), params


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    rows: dict[tuple, list] = {}
    start = time.perf_counter()
    for group, name, f, params in cases(args.seeds):
        report = fnn.locate(f, params, primitives=True)
        rows.setdefault((group, name), []).append(report)
    print(f"{'group':46} {'program':34} {'culprits':>9} {'units':>6}")
    bad = 0
    for (group, name), reports in rows.items():
        wrong = sum(not r.ok for r in reports)
        bad += wrong
        units = max(len(r.units) for r in reports)
        print(f"{group:46} {name:34} {wrong:>4} of {len(reports):<3} {units:>6}")
        for r in reports:
            if not r.ok:
                print(r)
    total = sum(len(r) for r in rows.values())
    print(f"{bad} of {total} right programs gave a culprit; {time.perf_counter() - start:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
