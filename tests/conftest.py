"""Test configuration: float64 for the whole process, strict ranks, JAX's persistent
compilation cache, a key fixture.

Float64 is switched on here, at the start of the test process, never by the library. Float32
cases ask for float32 explicitly.
"""

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from functional_nn._compile._options import prefer_fast_compilation
from functional_nn._compile._persistent import use_persistent_cache

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
use_persistent_cache()  # JAX_COMPILATION_CACHE_DIR=<empty folder> times a cold run
prefer_fast_compilation()  # tiny programs, each run a few times: compile them cheaply

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
