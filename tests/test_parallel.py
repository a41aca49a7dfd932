"""Data parallelism and sharded finite differences, on 4 simulated CPU devices.

The device count must be set before JAX starts, so each check runs in a fresh interpreter
with XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROGRAM = textwrap.dedent(
    """
    import json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np, optax
    import functional_nn as fnn
    from functional_nn.parallel import data_mesh

    assert len(jax.devices()) == 4, jax.devices()
    out = {}
    ds = fnn.load_dataset("moons")
    x, y = ds.x_train[:256], ds.y_train[:256]
    net = fnn.Network((2, 8, 8, 1), hidden="tanh")
    params = net.init(jax.random.key(0))
    mesh = data_mesh()
    for batch in (None, 32):
        kw = dict(optimizer=optax.adam(1e-2), steps=60, batch_size=batch, key=jax.random.key(1))
        one, h1 = fnn.fit(net, "bce", params, x, y, **kw)
        four, h4 = fnn.fit(net, "bce", params, x, y, mesh=mesh, **kw)
        err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                  for a, b in zip(jax.tree_util.tree_leaves(four), jax.tree_util.tree_leaves(one)))
        out[f"fit_{batch}"] = {"param_error": err,
                               "loss_error": float(np.max(np.abs(h4.loss - h1.loss) / h1.loss)),
                               "devices": len(four[0].W.sharding.device_set)}
    try:
        fnn.fit(net, "bce", params, x, y, steps=1, batch_size=30, key=jax.random.key(1), mesh=mesh)
    except ValueError as err:
        out["indivisible"] = str(err)

    J = fnn.objective(net, "bce")
    f = lambda p: J(p, x, y)
    plain = jax.jit(lambda p: fnn.finite_difference_grad(f, p))(params)
    sharded = jax.jit(lambda p: fnn.finite_difference_grad(f, p, mesh=mesh))(params)
    a = np.concatenate([np.ravel(l) for l in jax.tree_util.tree_leaves(sharded)])
    b = np.concatenate([np.ravel(l) for l in jax.tree_util.tree_leaves(plain)])
    out["fd"] = {"identical": bool(np.array_equal(a, b)), "max_abs": float(np.abs(a - b).max()),
                 "P": int(a.size)}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def four_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    r = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("batch", ["None", "32"])
def test_data_parallel_fit_gives_the_single_device_parameters(four_devices, batch):
    result = four_devices[f"fit_{batch}"]
    assert result["devices"] == 4  # parameters live replicated on every device
    assert result["param_error"] <= 1e-12
    assert result["loss_error"] <= 1e-12


def test_a_batch_that_does_not_divide_by_the_devices_is_refused(four_devices):
    assert (
        "the batch size is 30, which does not divide by the mesh's 4 devices"
        in (four_devices["indivisible"])
    )


def test_sharded_finite_differences_give_the_identical_gradient(four_devices):
    fd = four_devices["fd"]
    assert fd["P"] == 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1
    assert fd["identical"], fd


def test_train_script_runs_data_parallel_on_two_devices(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    r = subprocess.run(
        [sys.executable, "scripts/train.py", "--dataset", "moons", "--sizes", "2,8,1",
         "--steps", "50", "--batch-size", "32", "--devices", "2"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "2 cpu device(s)" in r.stdout and "test:  accuracy" in r.stdout
