"""Test configuration: float64 for the whole process, strict ranks, a key fixture.

Float64 is switched on here, at the start of the test process, never by the library. Float32
cases ask for float32 explicitly.
"""

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile(
    "default",
    deadline=None,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.load_profile("default")


@pytest.fixture
def key():
    return jax.random.key(0)
