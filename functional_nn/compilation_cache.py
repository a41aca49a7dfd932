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

import functools
import os
from collections.abc import Callable
from pathlib import Path

import jax

__all__ = [
    "FAST_COMPILE",
    "default_cache_dir",
    "prefer_fast_compilation",
    "run_compiled",
    "use_persistent_cache",
]

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""XLA options for one program that is small or runs once (``jax.jit(f, compiler_options=...)``
or ``.compile(compiler_options=...)``): about half the compile time (the complex step of the
lecture's network, 0.99 s -> 0.63 s of CPU; ``Network.init`` of it, 1.1-1.4 s -> 0.55-0.75 s
cold, 2 cores) for programs that then run in under a millisecond. The library uses it per
program; :func:`prefer_fast_compilation` is the same for a whole process."""


def default_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/functional_nn/jax``
    (``~/.cache/functional_nn/jax``)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "functional_nn" / "jax"


def use_persistent_cache(path: str | os.PathLike | None = None) -> Path | None:
    """Keep every compiled program of this process in ``path`` (default
    :func:`default_cache_dir`) and read them back in later processes.

    Programs are cached whatever their compile time (JAX's default skips those under one
    second, which here is nearly all of them). Returns the folder, or ``None`` when it cannot
    be created (a read-only home): the process then compiles as usual.
    """
    folder = Path(path) if path is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def prefer_fast_compilation() -> None:
    """Compile with XLA's backend optimizations mostly off (``jax_disable_most_optimizations``).

    For a process whose programs are small and run a few times (a gradient check, the test
    suite), LLVM's optimization passes cost more than they save; results are the same IEEE
    arithmetic (XLA's CPU backend does not reassociate without fast-math either way). Measured
    on 2 cores, 9 jitted gradient programs: 8.7-9.2 s of compilation with the default, 4.8-6.9 s
    with this. Not for training: a long-running program wants the optimized code.
    """
    jax.config.update("jax_disable_most_optimizations", True)


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
