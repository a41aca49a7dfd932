"""Checkpoints: a network and its parameters in one ``.npz`` file, written atomically.

Format (``format = "functional_nn/1"``): a NumPy ``.npz`` archive holding

- ``format``: the string ``"functional_nn/1"``;
- ``sizes`` (int64 array), ``hidden``, ``output`` (strings), ``bias`` (bool): the
  :class:`~functional_nn.Network`;
- ``W1, W2, ...`` and, with bias, ``b1, b2, ...``: layer ``l``'s arrays, shapes
  ``(H_l, H_{l-1})`` and ``(H_l,)``, in their own dtype.

:func:`save` writes to a temporary file in the same folder and renames it over ``path``
(``os.replace``, atomic on POSIX and Windows), so a crash leaves either the old checkpoint or
the new one, never half of one. :func:`load` refuses a file that is not such an archive, or
whose arrays do not fit its own architecture.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from functional_nn.network import Layer, Network, Params

__all__ = ["FORMAT", "load", "save"]

FORMAT = "functional_nn/1"


def save(path: str | os.PathLike, net: Network, params: Params) -> Path:
    """Write ``net`` and ``params`` to ``path`` (a ``.npz``), atomically.

    Returns:
        the path written.

    Raises:
        ValueError: ``params`` do not fit ``net``.
    """
    net.check_params(params, "save")
    path = Path(path)
    arrays = {
        "format": np.array(FORMAT),
        "sizes": np.array(net.sizes, np.int64),
        "hidden": np.array(net.hidden),
        "output": np.array(net.output),
        "bias": np.array(net.bias),
    }
    for l, (W, b) in enumerate(params, start=1):
        arrays[f"W{l}"] = np.asarray(W)
        if b is not None:
            arrays[f"b{l}"] = np.asarray(b)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


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
            with np.load(f, allow_pickle=False) as data:
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
        b = jnp.asarray(arrays[f"b{l}"]) if f"b{l}" in arrays else None
        params.append(Layer(jnp.asarray(arrays[f"W{l}"]), b))
    extra = sorted(k for k in arrays if k[0] in "Wb" and k[1:].isdigit() and int(k[1:]) > net.L + 1)
    if extra:
        raise ValueError(f"load: {path} has arrays {extra} beyond its {net.L + 1} layers")
    params = tuple(params)
    try:
        net.check_params(params, f"load: {path}")
    except ValueError as err:
        raise ValueError(
            f"{err}\n(the checkpoint's arrays do not fit its own architecture)"
        ) from None
    return net, params
