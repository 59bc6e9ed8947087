"""Data parallelism: a 1-D mesh over every device, the global batch split along it.

The train step is jitted with shardings (params replicated, batch sharded on its first axis).
The compiler inserts the cross-device reductions itself: the loss is the mean over the
*global* batch and its gradient is exact, with no hand-written ``pmean`` that could sum the
gradients twice. The mesh axis is ``AxisType.Auto`` (shardings propagated by the compiler).
``jax.make_mesh`` defaults to ``Explicit`` axes in jax 0.10, which make the sharding part of
every array's type and would need sharding annotations on the step's random draws; Auto keeps
the step free of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

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


def putter(sharding: NamedSharding) -> Callable:
    """``put(batch)``: a pytree of host arrays, whole on every process, as global arrays of ``sharding``.

    One process: ``jax.device_put``. Several (``jaxlogit.distributed``): every process holds the
    same global batch (the same rows, from the same permutation of the same key) and hands each
    of its devices only that device's slice (``jax.make_array_from_callback``), so the step sees
    the global batch one process would.
    """
    if jax.process_count() == 1:
        return functools.partial(jax.device_put, device=sharding)

    def put(batch):
        return jax.tree.map(lambda a: jax.make_array_from_callback(a.shape, sharding, a.__getitem__), batch)

    return put


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over the devices."""
    devices = mesh.devices.size
    if batch_size % devices:
        raise JaxlogitError(
            f"batch size {batch_size} is not divisible by the {devices} devices; use a multiple of {devices}"
        )


def shard_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """``train_step(state, batch, key)`` jitted with replicated state and key, sharded batch."""
    rep, split = replicated(mesh), batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(rep, split, rep), out_shardings=(rep, rep))
