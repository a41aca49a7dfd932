"""Two processes on one host joined by jax.distributed (gloo collectives on CPU): JAX's own
multi-host runtime, the code a cluster runs. Each runs distributed_worker.py; this test
compares what they saw with each other and with one process (this one, float64)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_nn as fnn

WORKER = Path(__file__).with_name("distributed_worker.py")
PROCESSES = 2  # this machine has 2 cores; 4 processes would time-share them
SETUP = {"steps": 40, "batch_size": 64, "patience": 15}  # fit's arguments in every run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, once_per_run):
    return once_per_run("distributed", lambda: start_processes(tmp_path_factory))


def start_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    port = free_port()
    flags = os.environ.get("XLA_FLAGS", "").split()  # one device per process, compiled fast
    one = " ".join(f for f in flags if not f.startswith("--xla_force_host_platform_device_count"))
    env = {**os.environ, "XLA_FLAGS": one}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(i),
                str(PROCESSES),
                str(port),
                str(out),
                json.dumps(SETUP),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(PROCESSES)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    return [json.loads((out / f"process_{i}.json").read_text()) for i in range(PROCESSES)]


@pytest.mark.heavy
def test_fit_over_two_processes_equals_one_process(runs):
    """The same data, network, optimizer, minibatches and early stopping in one process:
    the parameters agree to 1e-9 in float64, the histories too, in every process."""
    ds = fnn.load_dataset("xor")
    net = fnn.Network((2, 8, 1), hidden="tanh")
    params, history = fnn.fit(
        net, "bce", net.init(jax.random.key(0), dtype=jnp.float64),
        jnp.asarray(ds.x_train, jnp.float64), jnp.asarray(ds.y_train, jnp.float64),
        optimizer=optax.adam(1e-2), key=jax.random.key(1),
        x_val=jnp.asarray(ds.x_test[:64], jnp.float64),
        y_val=jnp.asarray(ds.y_test[:64], jnp.float64), **SETUP,
    )  # fmt: skip
    assert runs[0]["devices"] == PROCESSES and runs[0]["local"] == 1
    for seen in runs:
        for a, b in zip(seen["params"], jax.tree_util.tree_leaves(params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
        h = seen["history"]
        np.testing.assert_allclose(h["loss"], history.loss, rtol=1e-9)
        np.testing.assert_allclose(h["val_loss"], history.val_loss, rtol=1e-9)
        assert (h["stop_reason"], h["best_step"]) == (history.stop_reason, history.best_step)
    assert runs[0]["params"] == runs[1]["params"] and runs[0]["history"] == runs[1]["history"]


def test_a_checkpoint_is_written_once_and_read_by_every_process(runs):
    assert all(seen["checkpoint_equal"] for seen in runs)


def test_bad_multi_process_setups_are_named_in_every_process(runs):
    for seen in runs:
        said = seen["host_array_error"]
        assert "fit: x is an array of this process alone" in said
        assert "the mesh spans 2 processes" in said and "make_array_from_process_local_data" in said
        assert "the processes disagree on params: process(es) [1]" in seen["disagree_error"]


def test_check_grad_of_a_model_sharded_over_both_processes(runs):
    """Leaves that no process holds whole: right passes in both; 1% off on W2 fails W2 alone,
    in both, the worst direction's shard named (the same report in both, timings aside)."""
    for seen in runs:
        check = seen["check"]
        assert check["gathered"] == [False, False]  # global arrays: not fetchable to a host
        assert check["right"] == {"['W1']": "pass", "['W2']": "pass"}
        assert check["wrong"] == {"['W1']": "pass", "['W2']": "fail"}
        assert "sharded over 2 devices in 2 processes" in check["wrong_report"]
        assert "['W2']: worst in shard" in check["wrong_report"]
        assert seen["explicit"] == {"['W1']": "pass"}
        assert seen["vjp"] == {"['W1']": "pass", "['W2']": "pass"}

    def untimed(report):  # the seconds column differs between processes
        return [line.split()[:5] + line.split()[-1:] for line in report.splitlines()[1:]]

    a, b = (seen["check"]["wrong_report"] for seen in runs)
    assert a.splitlines()[0] == b.splitlines()[0] and untimed(a) == untimed(b)
