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

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent(
    """
    import json, re
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np, optax
    import functional_nn as fnn
    import functional_nn.training._loop as loop
    from functional_nn._compile._persistent import use_persistent_cache
    use_persistent_cache()
    from functional_nn._util._devices import data_mesh

    assert len(jax.devices()) == 4, jax.devices()
    out = {}
    ds = fnn.load_dataset("moons")
    x, y = ds.x_train[:256], ds.y_train[:256]
    x_val, y_val = ds.x_test[:64], ds.y_test[:64]
    net = fnn.Network((2, 8, 8, 1), hidden="tanh")
    params = net.init(jax.random.key(0))
    mesh = data_mesh()

    seen, programs = {}, loop.programs  # what the compiled loop is given
    def spy(config):
        p = programs(config)
        def run(state, data):
            seen["x"] = sorted({s.data.shape for s in data.x.addressable_shards})
            seen["x_val"] = sorted({s.data.shape for s in data.x_val.addressable_shards})
            seen["x_devices"] = len(data.x.sharding.device_set)
            if config.batch_size and config.mesh is not None and "hlo" not in seen:
                seen["hlo"] = p.run.lower(state, data).compile().as_text()
            return p.run(state, data)
        return p._replace(run=run)
    loop.programs = spy

    for batch in (None, 32):
        kw = dict(optimizer=optax.adam(1e-2), steps=60, batch_size=batch, key=jax.random.key(1),
                  x_val=x_val, y_val=y_val, chunk_size=25)
        one, h1 = fnn.fit(net, "bce", params, x, y, **kw)
        four, h4 = fnn.fit(net, "bce", params, x, y, mesh=mesh, **kw)
        err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
                  for a, b in zip(jax.tree_util.tree_leaves(four), jax.tree_util.tree_leaves(one)))
        out[f"fit_{batch}"] = {"param_error": err,
                               "loss_error": float(np.max(np.abs(h4.loss - h1.loss) / h1.loss)),
                               "val_error": float(np.max(np.abs(h4.val_loss - h1.val_loss)
                                                         / h1.val_loss)),
                               "devices": len(four[0].W.sharding.device_set),
                               "shards": {k: seen[k] for k in ("x", "x_val", "x_devices")}}
    # the collectives of the minibatch loop: the shapes they move (never a whole data set)
    collectives = [line for line in seen["hlo"].splitlines()
                   if re.search(r"= .*(all-gather|all-reduce|reduce-scatter|all-to-all|"
                                r"collective-permute)\\(", line)]
    out["collective_shapes"] = sorted({s for line in collectives
                                       for s in re.findall(r"[fs]\\d+\\[([\\d,]*)\\]", line)})
    for name, kw in [("indivisible_batch", dict(batch_size=30, key=jax.random.key(1))),
                     ("indivisible_n", dict(x=x[:254], y=y[:254])),
                     ("indivisible_val", dict(x_val=x_val[:63], y_val=y_val[:63]))]:
        args = dict(x=x, y=y, steps=1, mesh=mesh)
        args.update(kw)
        try:
            fnn.fit(net, "bce", params, **args)
        except ValueError as err:
            out[name] = str(err)

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


def _run_four_devices():
    flags = os.environ.get("XLA_FLAGS", "")  # the suite's fast-compile flags (tests/conftest.py)
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=4".strip()}
    r = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# One test runs the program and checks each property below: under pytest-xdist, tests sharing a
# fixture land on several workers, and each would start the 4-device interpreter again.


def _data_parallel_fit_gives_the_single_device_parameters(result):
    for batch in ("None", "32"):
        fit = result[f"fit_{batch}"]
        assert fit["devices"] == 4, fit  # parameters live replicated on every device
        assert fit["param_error"] <= 1e-12, fit
        assert fit["loss_error"] <= 1e-12 and fit["val_error"] <= 1e-12, fit


def _the_data_are_split_along_samples_never_replicated(result):
    for batch in ("None", "32"):  # N / n rows on each device, validation set too
        shards = result[f"fit_{batch}"]["shards"]
        assert shards == {"x": [[64, 2]], "x_val": [[16, 2]], "x_devices": 4}, shards


def _the_minibatch_loop_moves_batches_and_gradients_never_the_data_set(result):
    # the batch (32 rows) is gathered from the shards and reduced; gradients are all-reduced
    shapes = result["collective_shapes"]
    assert shapes and not any(s.startswith(("256", "64,")) for s in shapes), shapes


def _sizes_that_do_not_divide_by_the_devices_are_refused(result):
    batch, n, val = result["indivisible_batch"], result["indivisible_n"], result["indivisible_val"]
    assert "the batch size is 30, which does not divide by the mesh's 4 devices" in batch
    assert "N (the training samples) is 254" in n and "x[:252]" in n
    assert "the validation set's size is 63" in val


def _sharded_finite_differences_give_the_identical_gradient(result):
    fd = result["fd"]
    assert fd["P"] == 2 * 8 + 8 + 8 * 8 + 8 + 8 + 1
    assert fd["identical"], fd


@pytest.mark.heavy
def test_on_four_simulated_devices():
    result = _run_four_devices()
    _data_parallel_fit_gives_the_single_device_parameters(result)
    _the_data_are_split_along_samples_never_replicated(result)
    _the_minibatch_loop_moves_batches_and_gradients_never_the_data_set(result)
    _sizes_that_do_not_divide_by_the_devices_are_refused(result)
    _sharded_finite_differences_give_the_identical_gradient(result)


@pytest.mark.heavy
def test_train_script_runs_data_parallel_on_two_devices(tmp_path):
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2".strip()}
    r = subprocess.run(
        [sys.executable, "scripts/train.py", "--dataset", "moons", "--sizes", "2,8,1",
         "--steps", "50", "--batch-size", "32", "--devices", "2"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "2 cpu device(s)" in r.stdout and "test:  accuracy" in r.stdout
