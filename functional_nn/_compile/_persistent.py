"""JAX's persistent compilation cache, turned on for the calling process.

JAX can keep compiled programs on disk between processes. :func:`use_persistent_cache` turns
that on, in a user cache folder, unless JAX's own ``JAX_COMPILATION_CACHE_DIR`` names another
(point it at an empty folder to time a cold start). The scripts and ``tests/conftest.py`` call
it first thing; the library itself never does.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from functional_nn._compile._executables import enable_executable_cache
from functional_nn._compile._options import update_if_known
from functional_nn._compile._xla_options import user_cache_dir


def default_cache_dir() -> Path:
    """``$JAX_COMPILATION_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/functional_nn/jax``
    (``~/.cache/functional_nn/jax``)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    return user_cache_dir() / "jax"


def use_persistent_cache(
    path: str | os.PathLike | None = None, *, executables: bool = False
) -> Path | None:
    """Keep every compiled program of this process in ``path`` (default
    :func:`default_cache_dir`) and read them back in later processes.

    Programs are cached whatever their compile time (JAX's default skips those under one
    second, which here is nearly all of them). With ``executables=True``, the executables of
    :func:`~functional_nn.check_gradients`' built-in methods are also kept whole, in
    ``path/functional_nn-executables``, so that a later process neither traces nor lowers
    them (:mod:`functional_nn._compile._executables`, which says what keys them; leave it off in a
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
    update_if_known("jax_persistent_cache_min_compile_time_secs", 0.0)
    update_if_known("jax_persistent_cache_min_entry_size_bytes", 0)
    enable_executable_cache(folder / "functional_nn-executables" if executables else None)
    return folder
