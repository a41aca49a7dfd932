"""Test configuration: float64 for the whole process, strict ranks, JAX's persistent
compilation cache, a key fixture, and :func:`once_per_run` for the subprocess fixtures.

Float64 is switched on here, at the start of the test process, never by the library. Float32
cases ask for float32 explicitly.
"""

import fcntl
import json
import os

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from functional_nn import prefer_fast_compilation, use_persistent_cache

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
use_persistent_cache()  # JAX_COMPILATION_CACHE_DIR=<empty folder> times a cold run
prefer_fast_compilation()  # tiny programs, each run a few times: compile them cheaply
# ... in the processes the tests start too: they inherit XLA_FLAGS from prefer_fast_compilation,
# and this (the sharded check's subprocess: 33 s cold without both, 19 s with, 2 cores)
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")

settings.register_profile(
    "default",
    deadline=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("default")


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture scope
def pytest_collection_modifyitems(items):
    """Tests marked heavy first, the rest in their order (a stable sort).

    pytest-xdist hands tests to the workers in this order as each worker frees up; a heavy
    test collected last leaves one worker running it while the other has finished, which
    cost up to 10 s of the suite's wall time on 2 cores. Every worker collects and sorts the
    same way, as xdist requires.
    """
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def host_reads(monkeypatch):
    """The sizes of the jax.Arrays read back to the host while the test runs.

    A CPU does not enforce ``jax.transfer_guard`` for device-to-host copies, so they are
    counted here: every read through ``ArrayImpl._value`` (``float``, ``jax.device_get``,
    ``tolist``, printing) and every jax.Array handed to NumPy's converters and reductions
    (on a CPU, ``np.asarray`` reads a jax.Array through the buffer protocol, past ``_value``).
    """
    from jax._src import array

    reads = []
    value = array.ArrayImpl._value

    def counted(self):
        reads.append(int(self.size))
        return value.fget(self)

    monkeypatch.setattr(array.ArrayImpl, "_value", property(counted))
    for name in ("asarray", "array", "asanyarray", "isfinite", "all", "any", "sum", "min", "max"):
        monkeypatch.setattr(np, name, _counting(getattr(np, name), reads))
    return reads


def _counting(fn, reads):
    def wrapper(a, *args, **kwargs):
        if isinstance(a, jax.Array):
            reads.append(int(a.size))
        return fn(a, *args, **kwargs)

    return wrapper


@pytest.fixture(scope="session")
def once_per_run(tmp_path_factory):
    """``once_per_run(name, produce)``: ``produce()``'s JSON value, computed by one pytest-xdist
    worker per run and read by the others from the run's shared temporary folder.

    A module fixture that starts subprocesses (tests/checking/test_sharded.py,
    tests/training/test_distributed.py: 40-60 s each) would otherwise run once on every worker
    that draws one of its tests. ``--dist loadgroup`` was meant for this and does nothing
    with pytest 9 (pytest-xdist 3.8 renames ``item._nodeid``, which pytest 9 no longer reads),
    so the workers share the result here: the first takes a lock and computes, the others
    wait and read (the recipe of pytest-xdist's docs, with ``fcntl`` for the lock). Without
    xdist it is ``produce()``."""

    def run(name, produce):
        if os.environ.get("PYTEST_XDIST_WORKER") is None:
            return produce()
        root = tmp_path_factory.getbasetemp().parent  # this run's folder, shared by its workers
        path = root / f"{name}.json"
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                return json.loads(path.read_text())
            value = produce()
            part = root / f"{name}.json.part"
            part.write_text(json.dumps(value))
            part.replace(path)
            return value

    return run
