"""The compilation settings of the scripts and the tests (functional_nn.compilation_cache)."""

import dataclasses
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn import LOSSES, Network, backprop, default_methods
from functional_nn.compilation_cache import (
    FAST_COMPILE,
    prefer_fast_compilation,
    use_persistent_cache,
)
from functional_nn.executable_cache import (
    compile_and_store,
    disk_key,
    enable_executable_cache,
    load,
)
from functional_nn.method_programs import forget_executables


def test_prefer_fast_compilation_adds_the_older_emitters_and_keeps_a_users_choice(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    prefer_fast_compilation()
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/nowhere --xla_cpu_use_fusion_emitters=false"
    assert jax.config.values["jax_disable_most_optimizations"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    prefer_fast_compilation()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=true"
    monkeypatch.delenv("XLA_FLAGS")
    prefer_fast_compilation()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=false"


def test_fast_compile_options_are_accepted_and_compute_the_same_values():
    def f(z):
        return jnp.sum(jnp.log1p(jnp.exp(-z)) * z) + jnp.imag(jnp.sin(z + 1e-20j)).sum()

    z = jnp.linspace(-3.0, 3.0, 17)
    lowered = jax.jit(f).lower(z)
    fast = lowered.compile(compiler_options=FAST_COMPILE)(z)
    default = lowered.compile()(z)
    np.testing.assert_allclose(fast, default, rtol=4 * np.finfo(np.float64).eps)


@pytest.fixture
def disk(tmp_path):
    """The executable cache on, in an empty folder, with nothing kept in memory."""
    folder = enable_executable_cache(tmp_path / "executables")
    forget_executables()
    yield folder
    enable_executable_cache(None)
    forget_executables()


def _problem(batch=5):
    net = Network((3, 4, 2))
    params = net.init(jax.random.key(0), jnp.float64)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 3)))
    y = jnp.asarray((rng.uniform(size=(batch, 2)) > 0.5).astype(np.float64))
    return net, params, x, y


SECOND_PROCESS = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np
from functional_nn import Network, check_gradients, default_methods
from functional_nn.compilation_cache import prefer_fast_compilation, use_persistent_cache
use_persistent_cache(sys.argv[1], executables=True)
prefer_fast_compilation()
traced = []
def listen(event, duration, **kwargs):
    if event == "/jax/core/compile/jaxpr_trace_duration":
        traced.append(kwargs.get("fun_name", "?"))
jax.monitoring.register_event_duration_secs_listener(listen)
net = Network((3, 4, 2))
rng = np.random.default_rng(0)
params = net.init(jax.random.key(0), jnp.float64)
x = jnp.asarray(rng.standard_normal((5, 3)))
y = jnp.asarray((rng.uniform(size=(5, 2)) > 0.5).astype(np.float64))
r = check_gradients(net, "bce", params, x, y)
methods = [*default_methods(), "autodiff"]
print(json.dumps({"ok": r.ok, "traced": sorted({m for m in traced if m in methods}),
                  "errors": [[row.method, row.leaf, row.error] for row in r.rows]}))
"""


def test_a_second_process_neither_traces_nor_compiles_the_methods(tmp_path):
    def run():
        r = subprocess.run(
            [sys.executable, "-c", SECOND_PROCESS, str(tmp_path / "jax")],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "XLA_FLAGS": ""},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    first = run()  # JAX's cache is empty: every method is compiled here, and kept
    files = sorted((tmp_path / "jax" / "functional_nn-executables").glob("*.exe"))
    assert first["ok"] and len(files) == len(default_methods()) + 1  # and the reference
    assert len(first["traced"]) == len(files)
    second = run()
    assert second["traced"] == [] and second["errors"] == first["errors"]  # the same bits
    files[0].write_bytes(b"not an executable")  # truncated or foreign: compiled again
    files[1].unlink()  # lost, though JAX's persistent cache holds the program: the same
    files[2].rename(files[1].with_name("swap"))  # two files under each other's key: the same
    files[3].rename(files[2])
    files[1].with_name("swap").rename(files[3])
    third = run()
    assert len(third["traced"]) == 4 and third["errors"] == first["errors"]
    assert all(f.stat().st_size > 1000 for f in files[:4])  # all kept again
    assert run()["traced"] == []


def test_what_changes_a_trace_changes_the_key(disk):
    net, params, x, y = _problem()

    def key(method=backprop, net=net, loss="bce", args=(params, x, y)):
        return disk_key(method, net, loss, "sum", False, args, FAST_COMPILE)

    base = key()
    assert base == key() and base is not None
    assert key(net=Network((3, 4, 2), bias=False)) != base
    assert key(args=_problem(batch=6)[1:]) != base
    assert key(args=(params, x.astype(jnp.float32), y)) != base
    with jax.default_matmul_precision("float32"):
        assert key() != base
    with jax.numpy_rank_promotion("allow"):
        assert key() != base
    assert key(loss=LOSSES["bce"]) == base  # the built-in loss by name
    jax.config.update("jax_disable_most_optimizations", False)  # another compiled program
    try:
        assert key() != base
    finally:
        jax.config.update("jax_disable_most_optimizations", True)
    # a method or a loss from outside the library is traced every time, even under its name
    assert key(method=lambda *a: backprop(*a)) is None
    assert key(method=functools.wraps(backprop)(lambda *a: 2 * backprop(*a))) is None
    assert key(loss=dataclasses.replace(LOSSES["bce"])) is None  # an equal copy: not ours
    enable_executable_cache(None)
    assert key() is None


def test_a_folder_in_a_files_place_is_compiled_around(disk):
    net, params, x, y = _problem()
    key = disk_key(backprop, net, "bce", "sum", False, (params, x, y), FAST_COMPILE)
    (disk / f"{key}.exe").mkdir()
    assert load(key, (params, x, y)) is None  # no IsADirectoryError
    lowered = jax.jit(functools.partial(backprop, net, "bce")).lower(params, x, y)
    compiled = compile_and_store(lowered, key, FAST_COMPILE)  # cannot be kept, still runs
    np.testing.assert_array_equal(compiled(params, x, y)[0], backprop(net, "bce", params, x, y)[0])


def test_an_unwritable_folder_turns_the_persistent_cache_down(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a read-only folder
    assert use_persistent_cache(tmp_path) is None
