"""Data parallelism of corrector training: the shared mesh (``jaxlogit._mesh``) and the sharded step.

The train step is jitted with shardings (params replicated, batch sharded on its first axis).
The compiler inserts the cross-device reductions itself: the loss is the mean over the
*global* batch and its gradient is exact, with no hand-written ``pmean`` that could sum the
gradients twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from jax.sharding import Mesh, NamedSharding

from jaxlogit._mesh import DATA_AXIS, batch_sharding, check_batch_size, data_mesh, replicated

__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "check_batch_size",
    "data_mesh",
    "putter",
    "replicated",
    "shard_train_step",
]


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


def shard_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """``train_step(state, batch, key)`` jitted with replicated state and key, sharded batch."""
    rep, split = replicated(mesh), batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(rep, split, rep), out_shardings=(rep, rep))
