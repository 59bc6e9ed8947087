"""``logits_fn``: a backbone as a pure function of [0, 1] images, normalisation inside."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlogit.errors import JaxlogitError


@dataclasses.dataclass(frozen=True)
class NormalisedEval:
    """``(variables, x) -> logits``: normalise x with mean/std, apply the module in eval mode.

    Hashable and compared by value, so equal architectures share one compiled function.
    """

    module: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, variables: dict, x: jax.Array) -> jax.Array:
        """Images (B, H, W, C) in [0, 1] -> logits (B, num_classes)."""
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        return self.module.apply(variables, (x - mean) / std, train=False)


def logits_fn(module: nn.Module, variables: dict, *, mean: Sequence[float],
              std: Sequence[float]) -> jax.tree_util.Partial:
    """The backbone as ``f(x) -> logits`` for images in [0, 1], in eval mode.

    ``f(x)`` maps (B, H, W, C) float32 in [0, 1] to logits (B, num_classes): it subtracts
    ``mean``, divides by ``std`` (per channel) and applies ``module`` with BatchNorm's running
    statistics and dropout off.

    ``f`` is a ``jax.tree_util.Partial`` (``functools.partial(apply, variables)``): a pytree
    whose leaves are the variables. Pass it as an *argument* of a jitted function
    (``jax.jit(attack)(f, x, y)``) and the weights are traced inputs, not constants baked into
    the compiled program (slow to compile for 100M-parameter models), and two ``f`` of the same
    architecture reuse one compilation. ``jax.jit(f)`` also works but embeds the weights.

    Args:
        module: a flax backbone from :func:`jaxlogit.models.create`.
        variables: its ``{"params": ..., "batch_stats": ...}``.
        mean: per-channel mean, length C (e.g. ``spec.mean``).
        std: per-channel std, length C, all > 0.
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != len(std) or not mean or min(std) <= 0:
        raise JaxlogitError(f"bad normalisation mean={mean} std={std}: give one mean and one "
                            "positive std per channel (e.g. models.spec(name).mean/.std)")
    return jax.tree_util.Partial(NormalisedEval(module, mean, std), variables)
