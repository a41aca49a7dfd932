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
import jax.numpy as jnp
import numpy as np
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


# -- several processes (jax.distributed) ----------------------------------------------------------


def spans_processes(sharding) -> bool:
    """Whether ``sharding`` names devices that this process does not hold (a mesh over the
    devices of several processes, after ``jax.distributed.initialize``)."""
    return sharding is not None and not sharding.is_fully_addressable


def _is_global(a) -> bool:
    return isinstance(a, jax.Array) and not a.is_fully_addressable


def global_samples(a, sharding, name: str, where: str):
    """``a`` with its sample axis split by ``sharding`` over several processes' devices: a
    global ``jax.Array`` is kept (or re-split inside a program, never gathered); a host or
    one-process array is refused, since each process holds only its own samples."""
    if a is None or not spans_processes(sharding):
        return jax.device_put(a, sharding)
    if not _is_global(a):
        raise ValueError(
            f"{where}: {name} is an array of this process alone ({type(a).__name__} of shape "
            f"{tuple(a.shape)}), but the mesh spans {jax.process_count()} processes: build the "
            f"global array from each process's own samples with jax.make_array_from_process_"
            f"local_data(fnn.sample_sharding(mesh), local_{name}) (and the same for the other "
            f"sets), as docs/devices.md shows"
        )
    if a.sharding.is_equivalent_to(sharding, a.ndim):
        return a
    return jax.jit(lambda b: b, out_shardings=sharding)(a)


def _fingerprint(leaves) -> np.ndarray:
    """Shapes, dtypes and two sums of each leaf, as float64: equal trees give equal prints."""
    out = []
    for a in leaves:
        if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        v = np.asarray(a)
        w = np.abs(v.astype(np.complex128)).ravel() if v.size else np.zeros(1)
        out += [v.ndim, *v.shape, v.dtype.num, float(w.sum()), float((w * w).sum())]
    return np.asarray(out, np.float64)


def global_replicated(tree, sharding, what: str, where: str):
    """``tree`` replicated over ``sharding``'s devices: across processes each local leaf is
    placed from this process's copy (``jax.make_array_from_callback``) after every process
    is shown to hold the same values (shapes, dtypes and sums compared with
    ``multihost_utils.assert_equal``), so that processes that disagree get an error rather
    than different models."""
    if not spans_processes(sharding):
        return jax.device_put(tree, sharding)
    from jax.experimental import multihost_utils

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    local = [a for a in leaves if not _is_global(a)]
    mine = _fingerprint(local)
    sizes = multihost_utils.process_allgather(np.int64(mine.size))
    if len(set(np.asarray(sizes).tolist())) != 1:
        raise ValueError(f"{where}: the processes disagree on {what}: they hold trees of "
                         f"different shapes (every process must pass the same)")  # fmt: skip
    prints = np.asarray(multihost_utils.process_allgather(mine))
    others = [i for i in range(len(prints)) if not np.array_equal(prints[i], prints[0])]
    if others:
        raise ValueError(
            f"{where}: the processes disagree on {what}: process(es) {others} hold other "
            f"shapes or values than process 0 (every process must pass the same, e.g. from the "
            f"same key)"
        )

    def put(a):
        if _is_global(a):
            return jax.jit(lambda b: b, out_shardings=sharding)(a)
        if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(a))
            impl = jax.random.key_impl(a)
            return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl))(data)
        v = np.asarray(a)
        return jax.make_array_from_callback(v.shape, sharding, lambda index: v[index])

    return jax.tree_util.tree_unflatten(treedef, [put(a) for a in leaves])
