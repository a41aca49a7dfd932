"""Compiled checks kept on disk whole, so that a second process neither traces nor compiles.

JAX's persistent compilation cache skips XLA's compilation, but it is keyed by the lowered
program: a process must still trace and lower every program to find it, and for the checks'
programs tracing costs more than compiling (the README's Speed section: validate.py run
again, with and without this cache). This
cache keeps the executables of the library's gradient methods (and of ``derivations``' SymPy
closed forms), as :func:`~functional_nn.check_gradients` compiles them, keyed by what their
trace depends on:

- the source of ``functional_nn`` and ``derivations`` (a hash of every file: any edit is a
  new key), the versions of Python, NumPy, jax, jaxlib and SymPy, the platform, the machine
  and its CPU;
- the method (its module and name, and only when it is that very object there: a wrapper
  with a library method's name is not), the network, the loss (by name: only the built-in
  ones), the reduction, whether it reports its evaluations, and the abstract arguments (tree,
  shapes, dtypes, weak types);
- JAX's trace context (``jax_enable_x64``, the matmul precision and every other setting that
  JAX itself keys its traces by), its global settings (``jax_disable_most_optimizations``),
  the compile options and ``XLA_FLAGS``.

It is off unless a process turns it on (``use_persistent_cache(executables=True)``, as
``scripts/validate.py`` does); importing the library never does. What it cannot see is a
library function patched in memory (``monkeypatch``): such a process must leave it off. A
user's own methods and losses, several devices, or a JAX without the internals used here:
the program is traced and compiled as usual. A file that cannot be read back, or that holds
another key, is deleted and compiled again. Files of keys no longer used (after an edit of
the library) are not removed: delete the folder to reclaim them. Executables are Python
pickles: the folder is created ``0o700`` and only files that the process's own user owns are
read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import pickle
import platform
import sys
import threading
from pathlib import Path

import jax
import numpy as np

from functional_nn._compile._xla_options import supported_compile_options

FORMAT = 2
PACKAGES = ("functional_nn", "derivations")
"""Whose methods are kept (``derivations``: the SymPy closed forms of validate.py), and whose
source keys every executable."""
_FOLDER: list[Path | None] = [None]
_LISTENING: list[bool] = []


def enable_executable_cache(folder: str | os.PathLike | None) -> Path | None:
    """Keep the checks' executables in ``folder`` (``None``: turn the cache off). Returns the
    folder, or ``None`` when it cannot be created."""
    if folder is None:
        _FOLDER[0] = None
        return None
    if not _LISTENING:
        jax.monitoring.register_event_listener(_listen)
        _LISTENING.append(True)
    path = Path(folder)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        path = None
    _FOLDER[0] = path
    return path


def executable_folder() -> Path | None:
    """The folder in use, or ``None`` when the cache is off."""
    return _FOLDER[0]


@functools.cache
def _environment() -> str:
    """The library's source and the software and machine that compile: fixed per process."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            continue
        folder = Path(spec.origin).parent
        for path in sorted(folder.rglob("*.py")):
            digest.update(f"{package}/{path.relative_to(folder)}\0".encode() + path.read_bytes())
    try:
        cpu = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if "flags" in line]
    except OSError:
        cpu = []
    import jaxlib

    devices = jax.devices()
    parts = (
        FORMAT,
        digest.hexdigest(),
        sys.version,
        np.__version__,
        jax.__version__,
        jaxlib.__version__,
        importlib.metadata.version("sympy"),
        platform.machine(),
        platform.processor(),
        cpu[:1],
        devices[0].platform,
        devices[0].client.platform_version,
        devices[0].device_kind,
    )
    return repr(parts)


JAX_TRACE_CONTEXT = ("jax._src.config", "trace_context")
"""Where JAX keeps its own key for what changes a trace: an internal (module, function)."""


def _trace_context() -> str | None:
    """JAX's own key for what changes a trace (x64, matmul precision, ...), or ``None`` when
    this JAX lacks it or it holds something without a stable text (a named axis)."""
    module, name = JAX_TRACE_CONTEXT
    try:
        context = getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError):
        return None
    parts = []
    for value in context:
        axis_sizes = getattr(value, "axis_sizes", None)
        if axis_sizes is not None:  # the named-axis environment: empty outside vmap/shard_map
            if axis_sizes:
                return None
            continue
        text = repr(value)
        if " at 0x" in text:  # an object without a stable text: no key
            return None
        parts.append(text)
    return repr(parts)


def _library_name(method) -> str | None:
    """``module.qualname`` of a method that is that very object in a module of
    :data:`PACKAGES`; ``None`` for anything else (a user's function, a wrapper that copies a
    library method's name with ``functools.wraps``, a partial, a lambda)."""
    module, name = getattr(method, "__module__", None), getattr(method, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(name, str) or "<" in name:
        return None
    if module.split(".")[0] not in PACKAGES or module not in sys.modules:
        return None
    found = sys.modules[module]
    for part in name.split("."):
        found = getattr(found, part, None)
    return f"{module}.{name}" if found is method else None


def library_names(method, loss_name: str | None) -> tuple[str, str] | None:
    """``(method, loss)`` by name when both are the library's own: the method that very
    object in a module of :data:`PACKAGES`, and ``loss_name`` the name of a built-in loss
    (the caller knows the losses; ``None`` for a loss from elsewhere). ``None`` otherwise."""
    name = _library_name(method)
    if name is None or loss_name is None:
        return None
    return name, loss_name


def _config() -> str:
    """JAX's global settings (``jax_disable_most_optimizations`` among them: it changes the
    compiled code), those with a stable text."""
    items = sorted((k, repr(v)) for k, v in jax.config.values.items())
    return repr([(k, v) for k, v in items if " at 0x" not in v])


def disk_key(method, net, loss_name, reduction, info, args, options) -> str | None:
    """The file name of a method's executable, or ``None`` when it must not be kept: the cache
    is off, a method or loss from outside the library, several devices, or a JAX whose
    internals this key reads are missing or changed (then the method compiles as usual)."""
    if _FOLDER[0] is None:
        return None
    try:
        return _disk_key(method, net, loss_name, reduction, info, args, options)
    except Exception:  # noqa: BLE001 -- a JAX internal gone or changed: the plain path
        return None


def _disk_key(method, net, loss_name, reduction, info, args, options) -> str | None:
    if jax.device_count() != 1:
        return None
    names = library_names(method, loss_name)
    if names is None:
        return None
    name, loss_name = names
    context = _trace_context()
    if context is None:
        return None
    leaves, tree = jax.tree_util.tree_flatten(args)
    avals = [repr(jax.typeof(a)) for a in leaves]
    parts = (
        _environment(),
        context,
        _config(),
        os.environ.get("XLA_FLAGS", ""),
        sorted((options or {}).items()),
        name,
        repr(net),
        loss_name,
        reduction,
        info,
        str(tree),
        avals,
    )
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def load(key: str | None, args: tuple):
    """The executable kept under ``key``, tried once on ``args``; or ``None``. A file that
    cannot be loaded, holds another key (renamed) or whose executable fails on ``args`` is
    deleted where it can be (it is compiled and kept again)."""
    if key is None or _FOLDER[0] is None:
        return None
    path = _FOLDER[0] / f"{key}.exe"
    try:
        if path.stat().st_uid != os.getuid():
            return None
        kept_format, kept_key, serialized, in_tree, out_tree = pickle.loads(  # noqa: S301
            path.read_bytes()  # the process's own files, in its own 0o700 folder
        )
        if (kept_format, kept_key) != (FORMAT, key):
            raise ValueError(f"{path} holds another executable")
        from jax.experimental.serialize_executable import deserialize_and_load  # noqa: PLC0415

        executable = deserialize_and_load(serialized, in_tree, out_tree)
        jax.block_until_ready(executable(*args))
        return executable
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 -- truncated, renamed or foreign: compile again
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a read-only folder, a folder in the file's place: leave it
            pass
        return None


_FROM_JAX_CACHE = threading.local()

CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
"""JAX's monitoring event for a program served from its persistent cache (an internal name:
renamed, such a program is kept broken, fails when :func:`load` tries it, and is compiled
again)."""


def _listen(event: str, **kwargs) -> None:
    if event == CACHE_HIT_EVENT:  # in the thread that compiles
        _FROM_JAX_CACHE.hit = True


def repair_options(key: str) -> dict:
    """A compile option that changes nothing but JAX's cache key (the checks' programs hold no
    collective; JAX leaves the dump options out of its key, so they cannot serve), its value
    drawn from ``key``: a program that JAX's persistent cache holds, and this cache lost or
    keys anew (after an edit of the library's source), is compiled afresh under it once, to be
    kept again. Empty where this XLA does not know the option (jaxlib 0.6, 0.7): such a program is
    then not kept."""
    if not supported_compile_options({"xla_cpu_collective_timeout_seconds": 86_400}):
        return {}
    return {"xla_cpu_collective_timeout_seconds": 86_400 + int(key[:7], 16)}


def compile_and_store(lowered, key: str | None, options):
    """``lowered.compile(compiler_options=options)``, kept under ``key`` when compiled here.

    An executable that JAX read back from its own persistent cache cannot be kept: on CPU
    (jaxlib 0.10.2) serializing it again loses its kernels ("Function dot_general.5_kernel not
    found" when it is called). Such a program is compiled once more under
    :func:`repair_options` (a miss in JAX's cache unless that too was done before for this
    key: then nothing is kept, and the program is traced again next time)."""
    _FROM_JAX_CACHE.hit = False
    compiled = lowered.compile(compiler_options=options)
    if key is None:
        return compiled
    if _FROM_JAX_CACHE.hit:
        _FROM_JAX_CACHE.hit = False
        repair = repair_options(key)
        if not repair:
            return compiled
        try:
            fresh = lowered.compile(compiler_options={**(options or {}), **repair})
        except Exception:  # noqa: BLE001 -- XLA refused the repair: keep nothing
            return compiled
        if not _FROM_JAX_CACHE.hit:
            store(key, fresh)
        return compiled
    store(key, compiled)
    return compiled


def store(key: str | None, compiled) -> None:
    """Keep ``compiled`` under ``key`` (atomically: a file appears whole or not at all);
    nothing when it cannot be serialized or written."""
    if key is None or _FOLDER[0] is None:
        return
    try:
        from jax.experimental.serialize_executable import serialize  # noqa: PLC0415

        data = pickle.dumps((FORMAT, key, *serialize(compiled)))
    except Exception:  # noqa: BLE001 -- an executable this backend cannot serialize
        return
    path = _FOLDER[0] / f"{key}.exe"
    temporary = path.with_name(f".{key}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
