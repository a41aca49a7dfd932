"""One process of a multi-process run (tests/training/test_distributed.py starts N of them).

python distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_FOLDER SETUP_JSON

Joins the others through ``jax.distributed.initialize`` (gloo collectives on CPU), then, in
float64: ``fit`` over the global data mesh from this process's own samples (validation, early
stopping), a checkpoint written by process 0 and read by all, the bad setups (a host array, a
process that disagrees on the parameters), and ``check_grad`` of a model sharded over every
process's devices (right, then 1% wrong on one leaf; with explicit sharding too). Writes what it
saw to OUT_FOLDER/process_<id>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import functional_nn as fnn


def main(pid: int, n: int, port: int, out: Path, SETUP: dict) -> None:  # noqa: N803
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=n, process_id=pid)

    seen: dict = {"process": pid, "devices": len(jax.devices()), "local": len(jax.local_devices())}

    def local_rows(a):
        """This process's contiguous share of the samples."""
        N = a.shape[0]
        return np.asarray(a[pid * N // n : (pid + 1) * N // n], np.float64)

    def error_of(call) -> str:
        try:
            call()
        except ValueError as err:
            return str(err)
        return "no error"

    ds = fnn.load_dataset("xor")
    net = fnn.Network((2, 8, 1), hidden="tanh")
    mesh = fnn.data_mesh()

    def glob(a):
        return jax.make_array_from_process_local_data(fnn.sample_sharding(mesh), local_rows(a))

    x, y = glob(ds.x_train), glob(ds.y_train)
    x_val, y_val = glob(ds.x_test[:64]), glob(ds.y_test[:64])
    params = net.init(jax.random.key(0), dtype=jnp.float64)
    fitted, history = fnn.fit(net, "bce", params, x, y, optimizer=optax.adam(1e-2),
                              key=jax.random.key(1), x_val=x_val, y_val=y_val, mesh=mesh,
                              **SETUP)  # fmt: skip
    seen["params"] = [np.asarray(a).tolist() for a in jax.tree_util.tree_leaves(fitted)]
    seen["history"] = {"loss": history.loss.tolist(), "val_loss": history.val_loss.tolist(),
                       "best_step": history.best_step,
                       "stop_reason": history.stop_reason}  # fmt: skip
    path = fnn.save(out / "model.npz", net, fitted)
    loaded = fnn.load(path)[1]
    seen["checkpoint_equal"] = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(*map(jax.tree_util.tree_leaves, (loaded, fitted)), strict=True)
    )

    seen["host_array_error"] = error_of(
        lambda: fnn.fit(net, "bce", params, ds.x_train, y, steps=2, mesh=mesh)
    )
    mine = net.init(jax.random.key(pid), dtype=jnp.float64)  # each its own: they disagree
    seen["disagree_error"] = error_of(lambda: fnn.fit(net, "bce", mine, x, y, steps=2, mesh=mesh))

    # a model whose weights no process holds whole: W1 split by rows, W2 by columns
    D = len(jax.devices())
    rows, cols = NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P(None, "data"))
    w1 = np.sin(np.arange(4 * D * 3.0)).reshape(4 * D, 3)
    w2 = np.cos(np.arange(3 * 2 * D)).reshape(3, 2 * D) / 2
    model = {
        "W1": jax.make_array_from_callback(w1.shape, rows, lambda i: w1[i]),
        "W2": jax.make_array_from_callback(w2.shape, cols, lambda i: w2[i]),
    }
    inputs = jnp.linspace(-1, 1, 5 * 4 * D).reshape(5, 4 * D)

    def f(p):
        return jnp.sum(jnp.tanh(jnp.tanh(inputs @ p["W1"]) @ p["W2"]) ** 2)

    def wrong(p):  # 1% off on W2 alone
        g = jax.grad(f)(p)
        return {"W1": g["W1"], "W2": 1.01 * g["W2"]}

    layer = lambda p: {"h": jnp.tanh(inputs @ p["W1"]) @ p["W2"]}  # noqa: E731
    seen["vjp"] = {r.leaf: r.status for r in fnn.check_vjp(layer, model).rows}
    right_report = fnn.check_grad(f, model)
    wrong_report = fnn.check_grad(f, model, grad=wrong)
    seen["check"] = {
        "right": {r.leaf: r.status for r in right_report.rows},
        "wrong": {r.leaf: r.status for r in wrong_report.rows},
        "wrong_report": str(wrong_report),
        "gathered": [a.is_fully_addressable for a in model.values()],
    }

    # explicit sharding: the mesh's axis Explicit, the model checked inside it as written
    explicit = jax.make_mesh((D,), ("data",), axis_types=(AxisType.Explicit,))
    use = getattr(jax, "set_mesh", None) or jax.sharding.use_mesh
    with use(explicit):
        split = NamedSharding(explicit, P("data", None))
        e_model = {"W1": jax.make_array_from_callback(w1.shape, split, lambda i: w1[i])}

        def g(p):
            return jnp.sum(jnp.sin(p["W1"]) ** 2)

        seen["explicit"] = {r.leaf: r.status for r in fnn.check_grad(g, e_model).rows}

    (out / f"process_{pid}.json").write_text(json.dumps(seen))


if __name__ == "__main__":  # not on import (pytest's doctest collection imports it)
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]),
         json.loads(sys.argv[5]))  # fmt: skip
