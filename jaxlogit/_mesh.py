"""Data parallelism: a 1-D mesh over every device, the batch split along it, weights replicated.

Two ways to run a batch over the mesh:

* a jitted step with batch-sharded inputs (``batch_sharding``) and replicated state
  (``replicated``): the compiler partitions it and inserts the cross-device reductions itself
  (corrector training, ``jaxlogit.corrector._parallel``);
* ``over_rows(fn, mesh)``: every device runs ``fn`` on its own rows, the program ``fn`` compiles
  to on one device with that many rows, nothing crossing devices. For row-independent passes
  over images (attacks, predictions): with per-image keys their rows are the same bits on one
  device or many. On GPU/TPU it is one ``shard_map`` program (compiled and autotuned once for all
  devices); on CPU each device gets its own call of the one-device program (dispatched
  asynchronously, so they run at once; compiled once per device): XLA:CPU runs a partitioned
  program's convolutions and matmuls with other kernels, whose last bits differ (~1e-6 over 4
  forced CPU devices), so only separate calls keep a store byte-identical across device counts.

The mesh axis is ``AxisType.Auto`` (shardings propagated by the compiler). ``jax.make_mesh``
defaults to ``Explicit`` axes in jax 0.10, which make the sharding part of every array's type
and would need sharding annotations on a step's random draws; Auto keeps steps free of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxlogit import _xla, backend
from jaxlogit.errors import JaxlogitError

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``"data"`` over ``devices`` (default: every device in ``jax.devices()``)."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays split along their first (batch) axis over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays copied whole on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the devices."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise JaxlogitError(
            f"batch size {batch_size} is not divisible by the {devices} devices; use a multiple of {devices}"
        )


def global_rows(per_device: int, mesh: Mesh) -> int:
    """Rows of one call of an ``over_rows`` program: ``per_device`` rows on each device of ``mesh``."""
    return per_device * mesh.devices.size


def unpadded_per_device(per_device: int, num_rows: int, mesh: Mesh, *, least: int = 8) -> int:
    """Rows per device for ``num_rows`` rows in all: ``per_device``, or fewer when the rows would not
    fill one call (a few images are not padded up to a large batch), but at least ``least`` (XLA:CPU
    runs batches of fewer rows with other kernels, whose last bits differ)."""
    needed = -(-num_rows // mesh.devices.size)
    return max(1, min(per_device, max(needed, least)))


def over_rows(fn: Callable, mesh: Mesh, *, separate_calls: bool | None = None) -> Callable:
    """``fn`` (arrays (n, ...) -> pytree of arrays (n, ...), rows independent) run by every device of
    ``mesh`` on its own rows, jitted (``_xla.jit``).

    The result takes host arrays of ``global_rows(n, mesh)`` rows (device d gets rows
    ``[d * n, (d + 1) * n)``) and returns jax arrays of as many rows, sharded the same way
    (``batch_sharding(mesh)``). Each device runs the program ``fn`` compiles to for ``n`` rows;
    arrays ``fn`` closes over (weights) are copied to each.

    Args:
      fn: the per-device function.
      mesh: a ``data_mesh``.
      separate_calls: one call per device (True) or one ``shard_map`` program (False); None: separate
        calls on CPU only (see the module docstring).
    """
    separate_calls = backend.on_cpu() if separate_calls is None else separate_calls
    if not separate_calls:
        rows = batch_sharding(mesh)
        spec = PartitionSpec(DATA_AXIS)
        per_device = jax.shard_map(fn, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
        return _xla.jit(per_device, in_shardings=rows, out_shardings=rows)
    program = _xla.jit(fn)
    devices = list(mesh.devices.flat)
    sharding = batch_sharding(mesh)

    def run(*arrays):
        check_batch_size(arrays[0].shape[0], mesh)
        n = arrays[0].shape[0] // len(devices)
        parts = [
            program(*(jax.device_put(a[d * n : (d + 1) * n], device) for a in arrays))
            for d, device in enumerate(devices)
        ]  # dispatched asynchronously: the devices run at once
        return jax.tree.map(lambda *shards: _rows_array(shards, sharding), *parts)

    return run


def _rows_array(shards: Sequence[jax.Array], sharding: NamedSharding) -> jax.Array:
    """One array of the devices' row blocks ``shards`` (one per device, in mesh order), no copy."""
    shape = (sum(s.shape[0] for s in shards), *shards[0].shape[1:])
    return jax.make_array_from_single_device_arrays(shape, sharding, list(shards))
