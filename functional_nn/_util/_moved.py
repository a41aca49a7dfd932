"""The module paths of release 0.1 that are gone from the top level, still importable for one
release: each import warns once with a ``DeprecationWarning`` that names the new homes.

``functional_nn/`` holds only its subpackages and ``__init__.py``; the five paths below were
files there that defined nothing (the README had documented them). A path is served by the
finder below from this one table: its module is made on import, warns, and holds the same
objects as their homes (never copies). A name with a public home says ``fnn.NAME``; one
without says where it lives now and that it is internal.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.3.0"

_PUBLIC = "functional_nn"
_CACHE = "functional_nn._compile._options", "functional_nn._compile._persistent"

MOVED: dict[str, dict[str, str]] = {
    "functional_nn.parallel": {
        "data_mesh": _PUBLIC,
        "sample_sharding": _PUBLIC,
        "replicated": _PUBLIC,
        "shard_batch": _PUBLIC,
        "auto_mesh": "functional_nn._util._devices",
    },
    "functional_nn.compilation_cache": {
        "use_persistent_cache": _PUBLIC,
        "prefer_fast_compilation": _PUBLIC,
        "default_cache_dir": "functional_nn._compile._persistent",
        "FAST_COMPILE": "functional_nn._compile._options",
        "FAST_XLA_FLAGS": "functional_nn._compile._options",
        "fast_compile_options": "functional_nn._compile._options",
        "as_loop": "functional_nn._compile._tracing",
        "inline_jits": "functional_nn._compile._tracing",
        "run_compiled": "functional_nn._compile._tracing",
    },
    "functional_nn.executable_cache": {
        "enable_executable_cache": _PUBLIC,
        **dict.fromkeys(
            ("compile_and_store", "disk_key", "executable_folder", "library_names", "load")
            + ("repair_options", "store"),
            "functional_nn._compile._executables",
        ),
    },
    "functional_nn.gradcheck": {
        **dict.fromkeys(
            ("CheckRow", "GradCheckReport", "GradientMismatch", "LeafComparison")
            + ("TOLERANCES", "DIRECTIONAL_ABOVE", "check_gradients", "compare_gradients")
            + ("complex_step", "default_methods", "directional_derivatives")
            + ("random_directions",),
            _PUBLIC,
        ),
    },
    "functional_nn.xla_options": {
        "supported_xla_flags": _PUBLIC,
        "supported_compile_options": _PUBLIC,
        "FLAG_PROBE_TIMEOUT": "functional_nn._compile._xla_options",
        "flag_probe_dir": "functional_nn._compile._xla_options",
    },
}
"""Old path -> {name: the module that is its home now}; ``functional_nn`` means ``fnn.NAME``."""


def new_home(path: str, name: str) -> str:
    """Where ``path.name`` lives now, as the message writes it."""
    home = MOVED[path][name]
    return f"fnn.{name}" if home == _PUBLIC else f"{home}.{name} (internal)"


def message(path: str) -> str:
    names = MOVED[path]
    public = [f"fnn.{n}" for n, home in names.items() if home == _PUBLIC]
    internal = sorted({home for home in names.values() if home != _PUBLIC})
    where = f"import functional_nn as fnn and use {', '.join(public)}"
    if internal:
        where += f"; the rest is internal now, in {', '.join(internal)}"
    return f"{path} is deprecated and goes in functional_nn {REMOVED_IN}: {where}"


class _MovedPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Makes each old path's module from :data:`MOVED` when it is imported."""

    quiet = False  # set by :func:`attribute`, which warns at its caller's line itself

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module) -> None:
        path = module.__name__
        if not self.quiet:  # stacklevel 2: the import statement (importlib's frames skipped)
            warnings.warn(message(path), DeprecationWarning, stacklevel=2)
        module.__doc__ = f"Deprecated: {message(path)}."
        for name, home in MOVED[path].items():
            setattr(module, name, getattr(importlib.import_module(home), name))
        module.__all__ = sorted(MOVED[path])


def attribute(path: str):
    """The old path's module as an attribute of ``functional_nn`` (``fnn.gradcheck``, ``from
    functional_nn import gradcheck``), its warning at the user's line: stacklevel 3 is this
    function, ``functional_nn.__getattr__``, then the caller (importlib's frames are skipped).
    Once per process, as for the import statement."""
    module = sys.modules.get(path)
    if module is None:
        warnings.warn(message(path), DeprecationWarning, stacklevel=3)
        _MovedPaths.quiet = True
        try:
            module = importlib.import_module(path)
        finally:
            _MovedPaths.quiet = False
    return module


def install() -> None:
    """Serve the old paths (once per process; ``functional_nn/__init__`` calls it)."""
    if not any(isinstance(f, _MovedPaths) for f in sys.meta_path):
        sys.meta_path.append(_MovedPaths())
