"""The JAX internals the compile machinery relies on, patched away (functional_nn/_compile's
docstring lists them): every check still gives the verdict of the plain path, each internal
missing alone and all of them at once."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import serialize_executable

from functional_nn import Network, backprop, check_gradients, default_methods
from functional_nn._compile import _executables
from functional_nn._compile._executables import enable_executable_cache
from functional_nn.checking import _programs
from functional_nn.checking._programs import forget_executables


def _missing_trace_context(monkeypatch):  # JAX itself still has it (jax 0.12 calls it)
    monkeypatch.setattr(_executables, "JAX_TRACE_CONTEXT", ("jax._src.config", "no_such_key"))


def _renamed_cache_hit_event(monkeypatch):
    monkeypatch.setattr(_executables, "CACHE_HIT_EVENT", "/jax/functional_nn/renamed")


def _no_repair_option(monkeypatch):
    monkeypatch.setattr(_executables, "supported_compile_options", lambda options: {})


def _no_serialization(monkeypatch):
    monkeypatch.delattr(serialize_executable, "serialize")
    monkeypatch.delattr(serialize_executable, "deserialize_and_load")


def _inlining_fails(monkeypatch):
    @contextlib.contextmanager
    def broken():
        raise RuntimeError("a JAX whose disable_jit acts otherwise while lowering")
        yield  # pragma: no cover

    monkeypatch.setattr(_programs, "inline_jits", broken)


INTERNALS = {
    "trace_context": _missing_trace_context,
    "cache_hits event": _renamed_cache_hit_event,
    "repair option": _no_repair_option,
    "serialize_executable": _no_serialization,
    "disable_jit while lowering": _inlining_fails,
}


def _wrong(net, loss, params, x, y, reduction="sum"):  # a planted bug: one leaf 5% off
    J, grads = backprop(net, loss, params, x, y, reduction)
    return J, (grads[0]._replace(W=1.05 * grads[0].W), *grads[1:])


def _check():
    net = Network((3, 4, 2))
    params = net.init(jax.random.key(0), jnp.float64)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((5, 3)))
    y = jnp.asarray((rng.uniform(size=(5, 2)) > 0.5).astype(np.float64))
    report = check_gradients(
        net, "bce", params, x, y, methods={**default_methods(), "wrong": _wrong}
    )
    return {(r.method, r.leaf): r.status for r in report.rows}


@pytest.fixture(scope="module")
def plain():
    """The verdicts with the executable cache off and nothing kept in memory."""
    enable_executable_cache(None)
    forget_executables()
    return _check()


@pytest.mark.parametrize("missing", [*INTERNALS, "all of them"])
def test_checks_keep_their_verdicts_with_a_jax_internal_missing(
    missing, plain, tmp_path, monkeypatch
):
    assert plain[("wrong", "[0].W")] == "fail" and plain[("backprop", "[0].W")] == "pass"
    for name, patch in INTERNALS.items():
        if missing in (name, "all of them"):
            patch(monkeypatch)
    enable_executable_cache(tmp_path)
    try:
        for _ in range(2):  # compiled (and kept, where it still can be), then loaded back
            forget_executables()
            assert _check() == plain
    finally:
        enable_executable_cache(None)
        forget_executables()
