"""What every layer uses and that uses none of them: argument validation (``_validation.py``),
the highest matmul precision for checks (``_precision.py``), and device meshes
(``_devices.py``: the finite-difference engine and ``fit`` shard over the same meshes)."""
