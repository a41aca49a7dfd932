"""Device meshes: one axis of samples (``data_mesh``) for ``fit`` and the finite differences.

This path is kept for code that imports it (the README documented it); the code lives in
:mod:`functional_nn._util._devices`.
"""

from functional_nn._util._devices import (
    auto_mesh,
    data_mesh,
    replicated,
    sample_sharding,
    shard_batch,
)

__all__ = [
    "auto_mesh",
    "data_mesh",
    "replicated",
    "sample_sharding",
    "shard_batch",
]
