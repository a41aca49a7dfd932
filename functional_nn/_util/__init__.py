"""What every layer uses and that uses none of them: argument validation (``_validation.py``),
the highest matmul precision for checks (``_precision.py``), device meshes (``_devices.py``:
the finite-difference engine and ``fit`` shard over the same meshes; its meshes and
shardings are public as ``fnn.data_mesh`` and the rest), and the old module paths, served
with a ``DeprecationWarning`` from one table (``_moved.py``)."""

from functional_nn._util._devices import data_mesh, replicated, sample_sharding, shard_batch
from functional_nn._util._moved import MOVED as MOVED_PATHS
from functional_nn._util._moved import attribute as moved_module
from functional_nn._util._moved import install as serve_moved_paths

__all__ = [
    "MOVED_PATHS",
    "data_mesh",
    "moved_module",
    "replicated",
    "sample_sharding",
    "serve_moved_paths",
    "shard_batch",
]
