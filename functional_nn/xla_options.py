"""Which XLA compile options and ``XLA_FLAGS`` the running jaxlib accepts.

This path is kept for code that imports it (the README documented it); the code lives in
:mod:`functional_nn._compile._xla_options`.
"""

from functional_nn._compile._xla_options import (
    FLAG_PROBE_TIMEOUT,
    flag_probe_dir,
    supported_compile_options,
    supported_xla_flags,
)

__all__ = [
    "FLAG_PROBE_TIMEOUT",
    "flag_probe_dir",
    "supported_compile_options",
    "supported_xla_flags",
]
