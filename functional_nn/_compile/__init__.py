"""Compile latency, behind a small surface: what the other layers use to make their programs
cheap to trace and compile, and what scripts and tests call to keep them between processes.

- ``_tracing.py``: ``one_program`` (a decorator: one compiled program per call outside jit),
  ``inline_jits`` and the loops that stay loops under it (``scan``, ``as_loop``).
- ``_options.py``: the XLA options that compile small programs fast, per program
  (``fast_compile_options``, ``fast_jit``) or per process (``prefer_fast_compilation``).
- ``_xla_options.py``: which options and ``XLA_FLAGS`` the running XLA accepts.
- ``_persistent.py``: JAX's persistent compilation cache for this process.
- ``_executables.py``: ``check_gradients``' executables kept whole on disk.
- ``_shared.py``: compiled programs shared by structure (``shared_jit``, ``shared_program``):
  a function made afresh that computes what an earlier one computed compiles nothing.

JAX internals this package relies on (each has a plain fallback, and
``tests/_compile/test_internals.py`` runs checks with all of them patched away):

- ``jax._src.config.trace_context()``: part of the executables' disk key
  (``_executables.JAX_TRACE_CONTEXT``); missing or changed, nothing is kept on disk.
- the monitoring event ``/jax/compilation_cache/cache_hits`` (``_executables.CACHE_HIT_EVENT``):
  a program served from JAX's persistent cache loses its kernels when serialized again (seen
  on jaxlib 0.10.2 on CPU), so it is recompiled once under a repair option before it is kept;
  renamed, such a program is kept broken, fails when it is loaded and tried, and is deleted
  and compiled again.
- the XLA option ``xla_cpu_collective_timeout_seconds``, passed only to make JAX's cache key
  differ for that recompilation (``_executables.repair_options``); unknown to the XLA, the
  executable is not kept.
- ``jax.experimental.serialize_executable`` (``serialize``, ``deserialize_and_load``), an
  experimental API: failing, nothing is kept or loaded.
- how ``jax.disable_jit`` acts while ``jit(...).lower`` traces (``inline_jits``): lowering that
  fails under it is redone the plain way (``checking._programs``).

Imports none of the other layers.
"""

from functional_nn._compile._executables import (
    compile_and_store,
    disk_key,
    enable_executable_cache,
    library_names,
)
from functional_nn._compile._executables import load as load_executable
from functional_nn._compile._options import (
    FAST_COMPILE,
    FAST_XLA_FLAGS,
    fast_compile_options,
    fast_jit,
    prefer_fast_compilation,
)
from functional_nn._compile._persistent import default_cache_dir, use_persistent_cache
from functional_nn._compile._shared import shared_jit, shared_program
from functional_nn._compile._tracing import as_loop, inline_jits, one_program, run_compiled, scan
from functional_nn._compile._xla_options import supported_compile_options, supported_xla_flags

__all__ = [
    "FAST_COMPILE",
    "FAST_XLA_FLAGS",
    "as_loop",
    "compile_and_store",
    "default_cache_dir",
    "disk_key",
    "enable_executable_cache",
    "fast_compile_options",
    "fast_jit",
    "inline_jits",
    "library_names",
    "load_executable",
    "one_program",
    "prefer_fast_compilation",
    "run_compiled",
    "scan",
    "shared_jit",
    "shared_program",
    "supported_compile_options",
    "supported_xla_flags",
    "use_persistent_cache",
]
