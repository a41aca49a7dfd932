"""Compilation for processes that run many small programs once: the checks and the tests.

:func:`run_compiled` runs a method called outside ``jit`` as one compiled program (the
library's own methods use it). The persistent cache and :func:`prefer_fast_compilation` change
JAX's configuration, so importing the library never turns them on: the scripts and
``tests/conftest.py`` call them.

A fresh process compiles every program again; on the small problems of the lecture that
compilation, not the arithmetic, is what a user waits for. JAX can keep compiled programs on
disk between processes. :func:`use_persistent_cache` turns that on for the calling process,
in a user cache folder, unless JAX's own ``JAX_COMPILATION_CACHE_DIR`` names another (point it
at an empty folder to time a cold start). The scripts and ``tests/conftest.py`` call it first
thing; the library itself never does.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from collections.abc import Callable
from pathlib import Path

import jax

from functional_nn.executable_cache import enable_executable_cache
from functional_nn.xla_options import supported_compile_options, supported_xla_flags

__all__ = [
    "FAST_COMPILE",
    "FAST_XLA_FLAGS",
    "as_loop",
    "default_cache_dir",
    "fast_compile_options",
    "inline_jits",
    "prefer_fast_compilation",
    "run_compiled",
    "use_persistent_cache",
]

FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}
"""XLA options for one program that is small or runs once (``jax.jit(f, compiler_options=...)``
or ``.compile(compiler_options=...)``). The first two halve the compile time (the complex step
of the lecture's network, 0.99 s -> 0.63 s of CPU; ``Network.init`` of it, 1.1-1.4 s ->
0.55-0.75 s cold, 2 cores); XLA's older CPU fusion emitters, instead of the MLIR ones, halve
what is left (the six methods of validate.py on three of its networks: 8.1-8.7 s -> 4.8-4.9 s
of compilation) for programs that then run in milliseconds; and one LLVM module per program
instead of parts compiled on a pool (``xla_cpu_parallel_codegen_split_count``) takes a fifth
off again (the six programs of ``check_gradients`` on the lecture's network, 0.65 s -> 0.52 s
of compilation, median ratio 0.78 over 8 interleaved rounds, 2 cores): splitting costs more
than it saves on a program this small, and the library compiles several programs at once
anyway. The last two are CPU options, which other platforms' compilers do not read. The
library uses them per program; :func:`prefer_fast_compilation` is the same for a whole
process.

These are the options wished for; a jaxlib need not know them all (0.12 has no
``xla_cpu_use_fusion_emitters``). The library passes only :func:`fast_compile_options`, those
that the running XLA accepts."""

FAST_XLA_FLAGS = {
    "xla_cpu_use_fusion_emitters": "false",
    "xla_cpu_parallel_codegen_split_count": "1",
}
"""The CPU options of :data:`FAST_COMPILE` as :func:`prefer_fast_compilation` adds them to
``XLA_FLAGS``; of these, only the flags that the running XLA knows are set
(:func:`~functional_nn.xla_options.supported_xla_flags`)."""


def fast_compile_options() -> dict:
    """:data:`FAST_COMPILE` less the options that the running XLA does not know (probed once
    per process, :func:`~functional_nn.xla_options.supported_compile_options`)."""
    return supported_compile_options(FAST_COMPILE)


def default_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/functional_nn/jax``
    (``~/.cache/functional_nn/jax``)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "functional_nn" / "jax"


def use_persistent_cache(
    path: str | os.PathLike | None = None, *, executables: bool = False
) -> Path | None:
    """Keep every compiled program of this process in ``path`` (default
    :func:`default_cache_dir`) and read them back in later processes.

    Programs are cached whatever their compile time (JAX's default skips those under one
    second, which here is nearly all of them). With ``executables=True``, the executables of
    :func:`~functional_nn.check_gradients`' built-in methods are also kept whole, in
    ``path/functional_nn-executables``, so that a later process neither traces nor lowers
    them (:mod:`functional_nn.executable_cache`, which says what keys them; leave it off in a
    process that patches library functions in memory). Returns the folder, or ``None`` when
    it cannot be created or written (a read-only home): the process then compiles as usual.
    """
    folder = Path(path) if path is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK):  # JAX would warn at every program
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    _update_if_known("jax_persistent_cache_min_compile_time_secs", 0.0)
    _update_if_known("jax_persistent_cache_min_entry_size_bytes", 0)
    enable_executable_cache(folder / "functional_nn-executables" if executables else None)
    return folder


def prefer_fast_compilation() -> None:
    """Compile every program of this process as :data:`FAST_COMPILE` compiles one: XLA's backend
    optimizations mostly off (``jax_disable_most_optimizations``), the older CPU fusion
    emitters and one LLVM module per program (:data:`FAST_XLA_FLAGS`, added to
    ``XLA_FLAGS``).

    For a process whose programs are small and run a few times (a gradient check, the test
    suite), LLVM's optimization passes and the MLIR emitters cost more than they save; results
    are the same IEEE arithmetic (XLA's CPU backend does not reassociate without fast-math
    either way; a complex ``log`` or division may round differently in the last bit). Call it
    before the process's first computation: XLA reads ``XLA_FLAGS`` once, when JAX creates its
    backend. A flag the user has set in ``XLA_FLAGS`` stands, and a flag that this XLA does
    not know is left out (XLA would abort the process): the first call for a jaxlib asks a
    child process which it knows (1.2-1.6 s, 2 cores; the answer is kept on disk,
    :func:`~functional_nn.xla_options.supported_xla_flags`). A JAX without
    ``jax_disable_most_optimizations`` compiles with its defaults. Not for training: a
    long-running program wants the optimized code.

    Measured on 2 cores, the compilation of the six gradient methods of ``validate.py`` on
    three of its networks (4-3-2, the deep sigmoid and the ReLU regression): 8.1-8.7 s with
    JAX's defaults, 4.8-4.9 s with the first two settings (before the split count was added).
    """
    _update_if_known("jax_disable_most_optimizations", True)
    flags = os.environ.get("XLA_FLAGS", "")
    # a user's own choice stands
    wished = {name: value for name, value in FAST_XLA_FLAGS.items() if name not in flags}
    for name, value in supported_xla_flags(wished).items():
        flags = f"{flags} --{name}={value}".strip()
    os.environ["XLA_FLAGS"] = flags


def _update_if_known(name: str, value) -> bool:
    """``jax.config.update(name, value)``, or nothing where this JAX has no such setting."""
    try:
        jax.config.update(name, value)
    except (AttributeError, KeyError, ValueError):
        return False
    return True


@contextlib.contextmanager
def inline_jits():
    """Trace with every ``jax.jit`` met inside inlined: ``jnp``'s own (``jnp.where``,
    ``jnp.sum``, ``jnp.matmul`` and the rest are jitted functions) and the library's.

    Each such call is otherwise a trace of its own, cached per signature, and under ``vmap``
    a jaxpr batched and lowered of its own: in a fresh process that costs more than the
    arithmetic it wraps (the five built-in methods on the lecture's network, traced and
    lowered in a fresh process: 0.81 s, 0.57 s inlined, 2 cores). Inlined
    (``jax.disable_jit`` while ``jit(...).lower`` traces), the same primitives land directly
    in the one program; XLA inlines nested calls anyway, so the compiled program computes the
    same (the built-in methods' results are identical, ``tests/test_compilation_cache.py``).
    ``jax.disable_jit`` also runs ``lax.scan`` and ``lax.map`` as Python loops, one copy of
    the body per step: every loop of the library's gradient methods goes through
    :func:`as_loop`, which keeps it one loop. Only for code written so:
    :func:`~functional_nn.check_gradients` traces the library's own methods with built-in
    losses under it, never a user's method or loss.
    """
    token = _INLINING.set(True)
    try:
        with jax.disable_jit():
            yield
    finally:
        _INLINING.reset(token)


_INLINING = contextvars.ContextVar("functional_nn_inline_jits", default=False)


def as_loop(loop: Callable, body: Callable, *args, **kwargs):
    """``loop(body, *args, **kwargs)`` (``jax.lax.scan``, ``jax.lax.map``): one loop in the
    program, also under :func:`inline_jits`, whose body is then traced inlined too. Outside
    it, exactly ``loop(body, ...)`` (under a user's own ``jax.disable_jit``, a Python loop)."""
    if not _INLINING.get():
        return loop(body, *args, **kwargs)

    def inlined(*a, **k):
        with jax.disable_jit():
            return body(*a, **k)

    with jax.disable_jit(False):  # the loop itself: a loop, not a Python unrolling
        return loop(inlined, *args, **kwargs)


@functools.cache
def _compiled(core: Callable, n_static: int) -> Callable:
    return jax.jit(core, static_argnums=tuple(range(n_static)))


def run_compiled(core: Callable, statics: tuple, arrays: tuple):
    """``core(*statics, *arrays)``: one compiled program per configuration when the arrays are
    concrete (a method called outside ``jit``), inline when they are traced.

    Called outside ``jit``, a method would otherwise run operation by operation, compiling a
    small program for each one and each new shape: one program is cheaper to compile (about
    half, cold) and much faster to run again. The arguments have been checked before.
    ``statics`` must be hashable (an unhashable custom loss runs operation by operation)."""
    if any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays)):
        return core(*statics, *arrays)
    try:
        hash(statics)
    except TypeError:
        return core(*statics, *arrays)
    return _compiled(core, len(statics))(*statics, *arrays)
