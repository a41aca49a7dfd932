"""XLA options that compile small programs fast: per program (:func:`fast_compile_options`,
:func:`fast_jit`) or for a whole process (:func:`prefer_fast_compilation`).

A fresh process compiles every program again; on the small problems of the lecture that
compilation, not the arithmetic, is what a user waits for. These options change JAX's or XLA's
configuration only when called: importing the library never turns them on.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import jax

from functional_nn._compile._xla_options import supported_compile_options, supported_xla_flags

FAST_COMPILE = {
    "xla_backend_optimization_level": 0,
    "xla_llvm_disable_expensive_passes": True,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}
"""XLA options for one program that is small or runs once (``jax.jit(f, compiler_options=...)``
or ``.compile(compiler_options=...)``): XLA's backend optimizations and LLVM's expensive
passes off, XLA's older CPU fusion emitters instead of the MLIR ones, and one LLVM module per
program instead of parts compiled on a pool (``xla_cpu_parallel_codegen_split_count``:
splitting costs more than it saves on a program this small, and the library compiles several
programs at once anyway). Each cuts the compile time of the library's small programs, which
then run in milliseconds (the README's Speed section has the figures and their commands).
The last two are CPU options, which other platforms' compilers do not read. The library uses
them per program; :func:`prefer_fast_compilation` is the same for a whole process.

These are the options wished for; a jaxlib need not know them all (0.12 has no
``xla_cpu_use_fusion_emitters``). The library passes only :func:`fast_compile_options`, those
that the running XLA accepts."""


FAST_XLA_FLAGS = {
    "xla_cpu_use_fusion_emitters": "false",
    "xla_cpu_parallel_codegen_split_count": "1",
}
"""The CPU options of :data:`FAST_COMPILE` as :func:`prefer_fast_compilation` adds them to
``XLA_FLAGS``; of these, only the flags that the running XLA knows are set
(:func:`~functional_nn._compile._xla_options.supported_xla_flags`)."""


def fast_compile_options() -> dict:
    """:data:`FAST_COMPILE` less the options that the running XLA does not know (probed once
    per process, :func:`~functional_nn._compile._xla_options.supported_compile_options`)."""
    return supported_compile_options(FAST_COMPILE)


def fast_jit(fun: Callable, **jit_kwargs) -> Callable:
    """``jax.jit(fun, compiler_options=fast_compile_options(), **jit_kwargs)``, built at the
    first call: the options this XLA knows are probed then, not at import."""

    @functools.cache
    def jitted():
        return jax.jit(fun, compiler_options=fast_compile_options(), **jit_kwargs)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return jitted()(*args, **kwargs)

    return call


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
    child process which it knows (the answer is kept on disk,
    :func:`~functional_nn._compile._xla_options.supported_xla_flags`). A JAX without
    ``jax_disable_most_optimizations`` compiles with its defaults. Not for training: a
    long-running program wants the optimized code.
    """
    update_if_known("jax_disable_most_optimizations", True)
    flags = os.environ.get("XLA_FLAGS", "")
    # a user's own choice stands
    wished = {name: value for name, value in FAST_XLA_FLAGS.items() if name not in flags}
    for name, value in supported_xla_flags(wished).items():
        flags = f"{flags} --{name}={value}".strip()
    os.environ["XLA_FLAGS"] = flags


def update_if_known(name: str, value) -> bool:
    """``jax.config.update(name, value)``, or nothing where this JAX has no such setting."""
    try:
        jax.config.update(name, value)
    except (AttributeError, KeyError, ValueError):
        return False
    return True
