"""The public API as a user's typed code calls it: the file the type check reads.

``.ci/run`` runs ``mypy`` on this file (``[tool.mypy]`` in pyproject.toml): every call below
must type-check against the signatures the package ships with ``py.typed``, and each
annotated assignment pins a return type, so a signature that changes its types fails CI.
Importing it (pytest's ``--doctest-modules`` does) only defines the functions; nothing runs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

import functional_nn as fnn


def lecture_network(key: jax.Array) -> float:
    net: fnn.Network = fnn.Network((4, 3, 2), bias=False)
    params: fnn.Params = net.init(key)
    x = jax.random.normal(key, (8, 4))
    y = jnp.ones((8, 2))
    table: str = fnn.factor_table(net, fnn.jacobian_factors(net, "mse", params, x, y))
    J, grads = jax.jit(functools.partial(fnn.backprop, net, "mse"))(params, x, y)
    ref = jax.grad(fnn.objective(net, "mse"))(params, x, y)
    worst = max(c.normwise for c in fnn.compare_gradients(grads, ref))
    return float(worst) + len(table)


def training(key: jax.Array, path: Path) -> fnn.History:
    data: fnn.Dataset = fnn.load_dataset("moons", key)
    net = fnn.Network((2, 8, 1), hidden="relu")
    opt: optax.GradientTransformation = fnn.gradient_descent(0.1)
    params, history = fnn.fit(net, "bce", net.init(key), data.x_train, data.y_train, opt,
                              steps=10, key=key)  # fmt: skip
    written: Path = fnn.save(path, net, params)
    net2, params2 = fnn.load(written)
    assert isinstance(net2, fnn.Network) and params2 is not None
    mesh: Mesh = fnn.data_mesh()
    fnn.shard_batch(mesh, data.x_train)
    return history


def checking(params: dict[str, jax.Array]) -> bool:
    f = lambda p: jnp.sum(jnp.sin(p["w"]))  # noqa: E731
    g = lambda p: {"y": jnp.sin(p["w"])}  # noqa: E731
    report: fnn.GradCheckReport = fnn.check_grad(f, params, taylor=False, k=4)
    rows: list[fnn.CheckRow] = list(report.rows)
    vjp: fnn.GradCheckReport = fnn.check_vjp(g, params)
    jvp: fnn.GradCheckReport = fnn.check_jvp(g, params)
    found: fnn.LocateReport = fnn.locate(f, params)
    promoted = fnn.promote(f)
    text: str = str(report) + report.to_json() + str(found)
    return report.ok and vjp.ok and jvp.ok and bool(rows) and bool(text) and callable(promoted)
