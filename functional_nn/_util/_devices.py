"""Data parallelism on JAX's own runtime: shardings over a ``jax.sharding.Mesh``.

Nothing here is home-made: arrays are placed with :class:`jax.sharding.NamedSharding`. ``fit``
splits the whole data set along its sample axis over every device of the mesh (each device
holds N / n rows, never a replica), and every batch the same way; parameters and optimizer
state are replicated, and XLA inserts the reduction of the gradient (``dW = delta^T h`` sums
over samples, so each device sums its share and an all-reduce adds them). A minibatch is
gathered from the shards that hold its rows (each device takes its own rows, the batch is
summed over the devices): the batch travels, never the data set. The same code runs
on one device and on n, on CPU, GPU or TPU, and across hosts once ``jax.distributed`` is
initialized (see the README).

Finite differences are parallel over perturbation directions instead: their direction
blocks are split over the devices (:func:`functional_nn.finite_difference_grad` with
``mesh=``).
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(devices=None, axis: str = "data") -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device JAX sees), its axis of the
    ``Auto`` type, where XLA propagates shardings and inserts the collectives itself."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (axis,), devices=devices, axis_types=(AxisType.Auto,))


def auto_mesh(mesh: Mesh) -> Mesh:
    """The same devices and axis names with every axis ``Auto`` (``jax.make_mesh`` makes
    ``Explicit`` axes by default, which ``with_sharding_constraint`` does not take)."""
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def sample_sharding(mesh: Mesh) -> NamedSharding:
    """Split the leading (sample) axis over every device of the mesh."""
    return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full array on every device of the mesh."""
    return NamedSharding(mesh, P())


def check_divisible(n: int, mesh: Mesh, what: str, where: str, hint: str = "") -> None:
    """Raise ``ValueError`` unless ``n`` splits evenly over the mesh's devices; ``hint``
    says how to fix it (e.g. ``"x[:252], y[:252]"``)."""
    if n % mesh.size:
        fix = hint or str(n - n % mesh.size or mesh.size)
        raise ValueError(
            f"{where}: {what} is {n}, which does not divide by the mesh's {mesh.size} devices "
            f"(each device holds the same number of rows); use a multiple of {mesh.size}, e.g. "
            f"{fix} (nothing is padded or dropped silently)"
        )


def shard_batch(mesh: Mesh, *arrays):
    """Place arrays with their sample axis split over the mesh."""
    return tuple(jax.device_put(a, sample_sharding(mesh)) for a in arrays)
