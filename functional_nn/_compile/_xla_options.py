"""Which XLA compile options and ``XLA_FLAGS`` this jaxlib knows: probed, never a crash.

XLA's option names are internal and change between releases: jaxlib 0.12 dropped
``xla_cpu_use_fusion_emitters``, jaxlib 0.7 does not know ``xla_cpu_collective_timeout_seconds``.
An unknown name hurts in two ways:

- as a compile option (``jax.jit(f, compiler_options=...)``, ``lowered.compile(...)``) it
  raises ``No such compile option`` when the program compiles;
- in ``XLA_FLAGS`` it aborts the whole process (a ``LOG(FATAL)``, which Python cannot catch)
  when JAX creates its backend.

So the library never hands XLA a name it has not seen this XLA accept.
:func:`supported_compile_options` compiles a one-operation program with the options, once per
process and set of options, and leaves out every option this XLA refuses.
:func:`supported_xla_flags` cannot try a flag in its own process (an unknown one would end it,
and XLA reads ``XLA_FLAGS`` only once, before the first program), so it starts one Python
process that imports jax and runs one program with the flags (then one per flag, where the
XLA refuses them together), and keeps the answer in a small file keyed by the jaxlib
installation and the flags (``$XDG_CACHE_HOME/functional_nn/xla-flags``): a machine pays for
it once per jaxlib. Where the file cannot be written, every process asks again. What is left
out only makes compilation a little slower.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np


def _probe(x):
    return x + 1


@functools.cache
def _compiles_with(items: tuple) -> bool:
    """Whether a one-operation program compiles with these options on the default backend."""
    try:
        lowered = jax.jit(_probe).lower(np.float32(0))
        lowered.compile(compiler_options=dict(items))
    except Exception:  # noqa: BLE001 -- "No such compile option", a value of the wrong type, ...
        return False
    return True


def supported_compile_options(options: Mapping[str, object] | None) -> dict:
    """``options`` less those that this XLA refuses (an unknown name, a value it cannot parse).

    All are tried at once first; only when XLA refuses them is each tried alone. Each answer
    is kept for the process.

    >>> supported_compile_options({"xla_backend_optimization_level": 0, "xla_no_such": 1})
    {'xla_backend_optimization_level': 0}
    """
    items = tuple(sorted((options or {}).items()))
    if not items or _compiles_with(items):
        return dict(items)
    return {name: value for name, value in items if _compiles_with(((name, value),))}


FLAG_PROBE_TIMEOUT = 120.0
"""Seconds the child process that tries ``XLA_FLAGS`` may take (importing jax on a loaded
machine takes a few); past that the flags are taken as unknown and nothing is kept."""

_CHILD = (
    "import jax, jax.numpy as jnp; jax.block_until_ready(jax.jit(lambda x: x + 1)(jnp.ones(2)))"  # noqa: E501
)


def user_cache_dir() -> Path:
    """The library's folder in the user's cache: ``$XDG_CACHE_HOME/functional_nn``
    (``~/.cache/functional_nn``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "functional_nn"


def flag_probe_dir() -> Path:
    """Where the answers of :func:`supported_xla_flags` are kept:
    ``$XDG_CACHE_HOME/functional_nn/xla-flags`` (``~/.cache/functional_nn/xla-flags``)."""
    return user_cache_dir() / "xla-flags"


def _jaxlib_identity() -> str:
    """The jaxlib installation, without importing it (which could create a backend): its
    version, where it lies and when it was installed."""
    spec = importlib.util.find_spec("jaxlib")
    origin = spec.origin if spec is not None and spec.origin else ""
    try:
        stamp = os.stat(origin).st_mtime_ns if origin else 0
    except OSError:
        stamp = 0
    try:
        version = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return repr((version, origin, stamp, sys.executable))


def _flags_text(flags: Mapping[str, str]) -> str:
    return " ".join(f"--{name}={value}" for name, value in flags.items())


def _child_accepts(flags: Mapping[str, str]) -> bool | None:
    """Whether a fresh Python process runs a program with ``XLA_FLAGS`` set to ``flags`` (on
    the CPU, where XLA parses the same flags as everywhere); ``None`` when it timed out."""
    env = {**os.environ, "XLA_FLAGS": _flags_text(flags), "JAX_PLATFORMS": "cpu"}
    try:
        done = subprocess.run(  # noqa: S603 -- this interpreter, a fixed program
            [sys.executable, "-c", _CHILD],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=FLAG_PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    except OSError:
        return False
    return done.returncode == 0


def _read(path: Path) -> dict | None:
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) else None


def _write(path: Path, accepted: dict) -> None:
    """Atomically (a file appears whole or not at all); nothing where it cannot be written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(accepted))
        os.replace(temporary, path)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


def supported_xla_flags(flags: Mapping[str, str]) -> dict:
    """``flags`` less those that XLA would refuse in ``XLA_FLAGS``.

    Tried in a child process (an unknown flag aborts the process that reads it): all at
    once, and each alone only when that fails. The answer is kept in :func:`flag_probe_dir`,
    keyed by the jaxlib installation and the flags, and read back by later processes.
    """
    flags = {str(k): str(v) for k, v in flags.items()}
    if not flags:
        return {}
    key = hashlib.sha256(repr((_jaxlib_identity(), sorted(flags.items()))).encode()).hexdigest()
    path = flag_probe_dir() / f"{key[:32]}.json"
    kept = _read(path)
    if kept is not None and set(kept) <= set(flags):
        return {name: flags[name] for name in flags if name in kept}
    together = _child_accepts(flags)
    if together:
        accepted = dict(flags)
    else:
        alone = {name: _child_accepts({name: value}) for name, value in flags.items()}
        accepted = {name: flags[name] for name, ok in alone.items() if ok}
        if together is None or None in alone.values():  # timed out: ask again next time
            return accepted
    _write(path, accepted)
    return accepted
