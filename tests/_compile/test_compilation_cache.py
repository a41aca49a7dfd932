"""The compilation settings of the scripts and the tests (fnn.use_persistent_cache,
fnn.prefer_fast_compilation)."""

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn import (
    LOSSES,
    Network,
    autodiff,
    backprop,
    check_gradients,
    default_methods,
)
from functional_nn._compile import _executables as executable_cache
from functional_nn._compile._executables import (
    compile_and_store,
    disk_key,
    enable_executable_cache,
    load,
    repair_options,
)
from functional_nn._compile._options import (
    FAST_COMPILE,
    FAST_XLA_FLAGS,
    fast_compile_options,
    prefer_fast_compilation,
)
from functional_nn._compile._persistent import use_persistent_cache
from functional_nn._compile._tracing import as_loop, inline_jits
from functional_nn._compile._xla_options import supported_xla_flags
from functional_nn.checking import _programs as method_programs
from functional_nn.checking._programs import forget_executables, library_loss_name
from functional_nn.lecture import _gradients as backprop_module


def test_prefer_fast_compilation_adds_the_cpu_flags_xla_knows_and_keeps_a_users_choice(
    monkeypatch,
):
    known = supported_xla_flags(FAST_XLA_FLAGS)
    assert known, "this XLA knows none of FAST_XLA_FLAGS: update them"
    fast = " ".join(f"--{k}={v}" for k, v in known.items())
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/nowhere")
    prefer_fast_compilation()
    assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/nowhere {fast}"
    assert jax.config.values["jax_disable_most_optimizations"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_parallel_codegen_split_count=4")
    prefer_fast_compilation()
    rest = {k: v for k, v in known.items() if k != "xla_cpu_parallel_codegen_split_count"}
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_cpu_parallel_codegen_split_count=4",
        *(f"--{k}={v}" for k, v in rest.items()),
    ]
    monkeypatch.delenv("XLA_FLAGS")
    prefer_fast_compilation()
    assert os.environ["XLA_FLAGS"] == fast


def test_the_fast_xla_flags_set_are_flags_xla_reads():
    """An unknown name in ``XLA_FLAGS`` aborts the process when JAX creates its backend."""
    known = supported_xla_flags(FAST_XLA_FLAGS)
    env = {**os.environ, "XLA_FLAGS": " ".join(f"--{k}={v}" for k, v in known.items())}
    code = "import jax.numpy as jnp; print(float(jnp.ones(3).sum()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "3.0", out.stderr[-2000:]
    assert set(FAST_XLA_FLAGS) <= set(FAST_COMPILE)


def test_fast_compile_options_are_accepted_and_compute_the_same_values():
    def f(z):
        return jnp.sum(jnp.log1p(jnp.exp(-z)) * z) + jnp.imag(jnp.sin(z + 1e-20j)).sum()

    options = fast_compile_options()
    assert set(options) <= set(FAST_COMPILE) and "xla_backend_optimization_level" in options
    z = jnp.linspace(-3.0, 3.0, 17)
    lowered = jax.jit(f).lower(z)
    fast = lowered.compile(compiler_options=options)(z)
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
from functional_nn._compile._options import prefer_fast_compilation
from functional_nn._compile._persistent import use_persistent_cache
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


@pytest.mark.heavy
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
    if repair_options(files[0].stem):
        assert all(f.stat().st_size > 1000 for f in files[:4])  # all kept again
        assert run()["traced"] == []
    else:  # no option to repair with (jaxlib 0.7): what JAX's cache served is not kept
        assert not any(f.exists() for f in files[:4])
        assert len(run()["traced"]) == 4


def test_what_changes_a_trace_changes_the_key(disk):
    net, params, x, y = _problem()

    def key(method=backprop, net=net, loss="bce", args=(params, x, y)):
        own = library_loss_name(loss)  # what check_gradients passes for the loss
        return disk_key(method, net, own, "sum", False, args, fast_compile_options())

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
    key = disk_key(backprop, net, "bce", "sum", False, (params, x, y), fast_compile_options())
    (disk / f"{key}.exe").mkdir()
    assert load(key, (params, x, y)) is None  # no IsADirectoryError
    lowered = jax.jit(functools.partial(backprop, net, "bce")).lower(params, x, y)
    compiled = compile_and_store(lowered, key, fast_compile_options())  # cannot be kept, still runs
    np.testing.assert_array_equal(compiled(params, x, y)[0], backprop(net, "bce", params, x, y)[0])


def test_an_unwritable_folder_turns_the_persistent_cache_down(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as for a read-only folder
    assert use_persistent_cache(tmp_path) is None


# -- a JAX whose internals are missing or act otherwise: the plain path ------------------------


def _checked(net, params, x, y):
    report = check_gradients(net, "bce", params, x, y)
    report.raise_if_failed()
    return {(row.method, row.leaf): row.error for row in report.rows}


def test_a_jax_whose_trace_context_changed_keeps_nothing_and_the_check_runs(disk, monkeypatch):
    """The key reads ``jax._src.config.trace_context``; a JAX where it takes other arguments
    or is gone (JAX itself calls it, so it is the key's reading that is replaced here)."""
    net, params, x, y = _problem()
    expected = _checked(net, params, x, y)
    forget_executables()
    for f in disk.glob("*.exe"):
        f.unlink()

    def changed():
        raise TypeError("trace_context() missing 1 required positional argument")

    monkeypatch.setattr(executable_cache, "_trace_context", changed)
    assert disk_key(backprop, net, "bce", "sum", False, (params, x, y), None) is None
    assert _checked(net, params, x, y) == expected
    assert not list(disk.glob("*.exe"))


def test_an_executable_that_cannot_be_serialized_is_not_kept(disk, monkeypatch):
    import jax.experimental.serialize_executable as serialize_executable

    def refuse(compiled):
        raise NotImplementedError("this backend cannot serialize")

    monkeypatch.setattr(serialize_executable, "serialize", refuse)
    net, params, x, y = _problem()
    _checked(net, params, x, y)
    assert not list(disk.glob("*.exe"))


def test_a_jax_whose_inlining_fails_lowers_the_methods_the_plain_way(monkeypatch):
    net, params, x, y = _problem(batch=7)
    forget_executables()
    expected = _checked(net, params, x, y)
    forget_executables()

    @contextlib.contextmanager
    def broken():
        with inline_jits():
            raise TypeError("disable_jit acts otherwise in this JAX")
            yield

    monkeypatch.setattr(method_programs, "inline_jits", broken)
    assert _checked(net, params, x, y) == expected
    forget_executables()


# -- nested jits inlined while the library's methods are traced -----------------------------------


def _lowered(method, net, loss, args, inline: bool):
    """The method's program, lowered, and the number of nested jits in its jaxpr."""
    kw = {"return_info": True} if "return_info" in inspect.signature(method).parameters else {}
    jitted = jax.jit(functools.partial(method, net, loss, **kw))
    with inline_jits() if inline else contextlib.nullcontext():
        traced = jitted.trace(*args)
        return traced.lower(), _nested_jits(traced.jaxpr.jaxpr)


def _nested_jits(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name in ("jit", "pjit")
        for sub in _jaxprs_in(eqn.params.values()):
            count += _nested_jits(sub)
    return count


def _jaxprs_in(values):
    """The jaxprs among an equation's parameters (``jax.extend.core.jaxprs_in_params``, which
    jax 0.7 lacks)."""
    for value in values:
        if isinstance(value, (tuple, list)):
            yield from _jaxprs_in(value)
        elif isinstance(value, jax.extend.core.ClosedJaxpr):
            yield value.jaxpr
        elif isinstance(value, jax.extend.core.Jaxpr):
            yield value


@pytest.mark.parametrize("case", ["lecture", "loops"])
def test_inlined_methods_compute_the_same_and_keep_their_loops(case, monkeypatch):
    """Every built-in method traced with nested jits inlined gives the very numbers of the
    usual trace; where the usual program loops (finite differences over P > 32 directions in
    chunks, the Jacobian chain over chunks of samples), the inlined one loops as often: no
    loop is unrolled into copies of its body."""
    if case == "lecture":
        net, loss, n = Network((4, 3, 2), bias=False), "bce", 8
    else:
        net, loss, n = Network((6, 8, 3), hidden="relu", output="identity"), "mse", 24
        budget = 5 * backprop_module._factor_size(net)  # chunks of 5 samples: 5 steps
        monkeypatch.setattr(backprop_module, "_FACTOR_BUDGET", budget)
    params = net.init(jax.random.key(1), jnp.float64)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(n, net.sizes[0]))
    y = (rng.uniform(size=(n, net.sizes[-1])) > 0.5).astype(np.float64)
    loops = {}
    for name, method in {"autodiff": autodiff, **default_methods()}.items():
        usual, usual_nested = _lowered(method, net, loss, (params, x, y), inline=False)
        inlined, nested = _lowered(method, net, loss, (params, x, y), inline=True)
        assert usual_nested > 0, name  # what the count below would find, were it left
        loops[name] = usual.as_text().count("stablehlo.while")
        assert inlined.as_text().count("stablehlo.while") == loops[name], name
        assert nested == 0, name  # no jit left inside, in loop bodies neither
        for a, b in zip(
            jax.tree_util.tree_leaves(usual.compile()(params, x, y)),
            jax.tree_util.tree_leaves(inlined.compile()(params, x, y)),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    if case == "loops":  # the loops the test is about are there
        assert loops["finite_differences"] >= 1 and loops["jacobian_chain"] >= 1, loops


def test_as_loop_keeps_a_scan_one_loop_under_inline_jits():
    steps = []

    def body(c, _):
        steps.append(1)
        return c + 1.0, None

    def primitives(jaxpr):
        return {e.primitive.name for e in jaxpr.jaxpr.eqns}

    with inline_jits():  # read from the programs, not from how often JAX calls the body
        unrolled = jax.make_jaxpr(lambda c: jax.lax.scan(body, c, None, length=3))(0.0)
        looped = jax.make_jaxpr(lambda c: as_loop(jax.lax.scan, body, c, None, length=3))(0.0)
    assert "scan" not in primitives(unrolled)  # disable_jit unrolls
    assert primitives(looped) == {"scan"}  # as_loop keeps one loop
    steps.clear()
    with jax.disable_jit():  # a user's own: as_loop changes nothing, the loop runs in Python
        as_loop(jax.lax.scan, body, 0.0, None, length=3)
    assert len(steps) == 3  # one Python call per step: the loop ran, nothing traced


def test_only_the_librarys_own_methods_with_its_own_losses_are_inlined(monkeypatch):
    """A user's method, or a library method with a user's loss, is traced as JAX traces it:
    their code may hold loops that inlining would unroll (seen here: a scan of 3 steps whose
    body runs once when traced as a loop, 3 times when unrolled)."""
    forget_executables()
    entered = []
    real = method_programs.inline_jits

    @contextlib.contextmanager
    def counted():
        entered.append(1)
        with real():
            yield

    monkeypatch.setattr(method_programs, "inline_jits", counted)
    bodies = []

    def loop_of_three(v):
        def body(c, _):
            bodies.append(1)
            return c, None

        return jax.lax.scan(body, v, None, length=3)[0]

    def mine(net, loss, params, x, y):
        return autodiff(net, loss, params, jax.tree_util.tree_map(loop_of_three, x), y)

    net = Network((3, 2, 1))
    params = net.init(jax.random.key(0), jnp.float64)
    x, y = np.ones((4, 3)), np.array([[0.0], [1.0], [1.0], [0.0]])
    check_gradients(net, "bce", params, x, y, methods={"mine": mine, "backprop": backprop})
    # backprop and autodiff inlined, mine not: its scan traced as a loop calls the body once
    # per trace (once from jax 0.6.2 to 0.12.1), unrolled it would call it 3 times per trace
    assert len(entered) == 2 and 0 < len(bodies) < 3, bodies
    entered.clear()
    bodies.clear()
    mse = LOSSES["mse"]
    theirs = dataclasses.replace(
        mse, name="theirs", value=lambda a, b: mse.value(loop_of_three(a), b)
    )
    check_gradients(Network((3, 2, 1), output="identity"), theirs, params, x, y,
                    methods={"backprop": backprop})  # fmt: skip
    assert entered == [] and len(bodies) >= 1 and len(bodies) % 3 != 0
