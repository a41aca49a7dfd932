"""The compilation settings for processes that run many small programs once (the scripts and
the tests call :func:`use_persistent_cache` and :func:`prefer_fast_compilation`).

This path is kept for code that imports it (the README documented it); the code lives in
:mod:`functional_nn._compile`.
"""

from functional_nn._compile._options import (
    FAST_COMPILE,
    FAST_XLA_FLAGS,
    fast_compile_options,
    prefer_fast_compilation,
)
from functional_nn._compile._persistent import default_cache_dir, use_persistent_cache
from functional_nn._compile._tracing import as_loop, inline_jits, run_compiled

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
