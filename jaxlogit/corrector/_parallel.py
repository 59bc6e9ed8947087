"""Data parallelism of corrector training: the shared mesh (``jaxlogit._mesh``) and the sharded step.

The train step is jitted with shardings (params replicated, batch sharded on its first axis).
The compiler inserts the cross-device reductions itself: the loss is the mean over the
*global* batch and its gradient is exact, with no hand-written ``pmean`` that could sum the
gradients twice.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.sharding import Mesh

from jaxlogit._mesh import DATA_AXIS, batch_sharding, check_batch_size, data_mesh, replicated

__all__ = ["DATA_AXIS", "batch_sharding", "check_batch_size", "data_mesh", "replicated", "shard_train_step"]


def shard_train_step(train_step: Callable, mesh: Mesh) -> Callable:
    """``train_step(state, batch, key)`` jitted with replicated state and key, sharded batch."""
    rep, split = replicated(mesh), batch_sharding(mesh)
    return jax.jit(train_step, in_shardings=(rep, split, rep), out_shardings=(rep, rep))
