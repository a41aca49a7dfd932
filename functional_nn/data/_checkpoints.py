"""Checkpoints: a network and its parameters in one ``.npz`` file, written atomically.

Format (``format = "functional_nn/1"``): a NumPy ``.npz`` archive holding

- ``format``: the string ``"functional_nn/1"``;
- ``sizes`` (int64 array), ``hidden``, ``output`` (strings), ``bias`` (bool): the
  :class:`~functional_nn.Network`;
- ``W1, W2, ...`` and, with bias, ``b1, b2, ...``: layer ``l``'s arrays, shapes
  ``(H_l, H_{l-1})`` and ``(H_l,)``, in their own dtype. A dtype that NumPy does not know
  natively (``bfloat16`` and JAX's other ``ml_dtypes``) is stored as the unsigned integers of
  its bits, with its name in ``W1_dtype`` (or ``b1_dtype``), so that :func:`load` gives back
  exactly what was saved.

:func:`save` checks everything before it touches the disk, writes to a temporary file in the
same folder, fsyncs it, renames it over ``path`` (``os.replace``, atomic on POSIX and Windows)
and fsyncs the folder, so a crash leaves either the old checkpoint or the new one, never half
of one. A new file gets the permissions the process umask gives (``0o666 & ~umask``); a
replaced file keeps its own. :func:`load` refuses a file that is not such an archive, or whose
arrays do not fit its own architecture.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn.lecture._network import Layer, Network, Params

FORMAT = "functional_nn/1"


def save(path: str | os.PathLike, net: Network, params: Params) -> Path:
    """Write ``net`` and ``params`` to ``path`` (a ``.npz``), atomically.

    Returns:
        the path written. Across processes (``jax.distributed``) process 0 alone writes, and
        every process returns once the file is written (a barrier), so each can ``load`` it;
        ``params`` must then be replicated (as :func:`~functional_nn.fit` returns them).

    Raises:
        ValueError: ``params`` do not fit ``net`` (shapes, a dtype that is not floating, a
            non-finite entry), or ``path`` is a folder or in one that does not exist; the
            existing file is then left untouched.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save: path must be a str or os.PathLike; got {type(path).__name__}")
    if not isinstance(net, Network):
        raise ValueError(f"save: net must be a Network; got {type(net).__name__}")
    net.check_params(params, "save")  # finite too: a checkpoint of nan is never useful
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"save: {path} is a folder; give a file name such as {path / 'model.npz'}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"save: the folder {folder} of {path} does not exist")
    arrays = {
        "format": np.array(FORMAT),
        "sizes": np.array(net.sizes, np.int64),
        "hidden": np.array(net.hidden),
        "output": np.array(net.output),
        "bias": np.array(net.bias),
    }
    for l, (W, b) in enumerate(params, start=1):
        for name, a in ((f"W{l}", W), (f"b{l}", b)):
            if a is not None:
                arrays.update(_encode(name, np.asarray(a)))
    if jax.process_count() > 1:  # one writer; every process returns once the file is there
        from jax.experimental import multihost_utils

        if jax.process_index() == 0:
            _write(path, folder, arrays)
        multihost_utils.sync_global_devices(f"functional_nn.save {path}")
        return path
    _write(path, folder, arrays)
    return path


def _write(path: Path, folder: Path, arrays: dict) -> None:
    """The file, atomically: a temporary file in the same folder, synced, renamed."""
    mode = path.stat().st_mode & 0o7777 if path.is_file() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fchmod(f.fileno(), mode) if hasattr(os, "fchmod") else None
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _umask() -> int:
    """The process umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable: fsync the folder's entry table (POSIX; a no-op elsewhere)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(name: str, a: np.ndarray) -> dict[str, np.ndarray]:
    """``{name: a}``, or the bits of ``a`` and its dtype's name when NumPy cannot store it."""
    if a.dtype.kind in "fc" and a.dtype.isnative:  # float16/32/64, complex: NumPy's own
        return {name: a}
    bits = np.dtype(f"u{a.dtype.itemsize}")
    return {name: a.view(bits), f"{name}_dtype": np.array(str(a.dtype))}


def _decode(arrays: dict[str, np.ndarray], name: str) -> jax.Array:
    a = arrays[name]
    if f"{name}_dtype" in arrays:
        dtype = jnp.dtype(str(arrays[f"{name}_dtype"]))
        a = a.view(dtype)
    return jnp.asarray(a)


def load(path: str | os.PathLike) -> tuple[Network, Params]:
    """Read a checkpoint written by :func:`save`.

    Returns:
        ``(net, params)``, the arrays in the dtype they were saved in.

    Raises:
        ValueError: the file is not a functional_nn checkpoint (truncated, another format), or
            its arrays do not fit its architecture; the message says which.
    """
    path = Path(path)
    with open(path, "rb") as f:  # opened here, so that it is closed whatever np.load raises
        try:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError(f"it holds a single {type(data).__name__}, not an .npz archive")
            with data:
                arrays = {k: data[k] for k in data.files}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
            raise ValueError(f"load: {path} is not a readable .npz checkpoint ({err})") from None
    if str(arrays.get("format", "")) != FORMAT:
        raise ValueError(
            f"load: {path} is not a {FORMAT} checkpoint (format={arrays.get('format')})"
        )
    try:
        net = Network(
            tuple(int(s) for s in arrays["sizes"]),
            hidden=str(arrays["hidden"]),
            output=str(arrays["output"]),
            bias=bool(arrays["bias"]),
        )
    except KeyError as err:
        raise ValueError(f"load: {path} lacks the architecture entry {err}") from None
    params = []
    for l in range(1, net.L + 2):
        if f"W{l}" not in arrays:
            raise ValueError(f"load: {path} has no W{l} but its network has {net.L + 1} layers")
        try:
            b = _decode(arrays, f"b{l}") if f"b{l}" in arrays else None
            params.append(Layer(_decode(arrays, f"W{l}"), b))
        except (TypeError, ValueError) as err:
            raise ValueError(f"load: {path} has an unreadable array in layer {l} ({err})") from None
    extra = sorted(k for k in arrays if k[0] in "Wb" and k[1:].isdigit() and int(k[1:]) > net.L + 1)
    if extra:
        raise ValueError(f"load: {path} has arrays {extra} beyond its {net.L + 1} layers")
    params = tuple(params)
    try:
        net.check_params(params, f"load: {path}")
    except ValueError as err:
        raise ValueError(
            f"{err}\n(the checkpoint's arrays do not fit its own architecture, or are not finite)"
        ) from None
    return net, params
