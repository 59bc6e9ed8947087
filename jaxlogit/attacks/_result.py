"""The result every attack returns, and its assembly from the final adversarial images."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlogit.attacks import _norms


class AttackResult(NamedTuple):
    """What an attack did to a batch of B images.

    Attributes:
      x_adv: (B, H, W, C) float32 adversarial images in [0, 1].
      success: (B,) bool, exactly ``argmax(logits) != y`` (targeted: ``== y_target``).
      logits: (B, C) ``logits_fn(x_adv)``.
      norm: (B,) perturbation norm ``||x_adv - x||``, L-inf for PGD/MIM, L2 for DeepFool/C&W.
      iterations: (B,) int32. PGD/MIM: steps taken (all of them); DeepFool: steps taken before
        the sample was misclassified (or ``max_iter``); C&W: the gradient step (1-based,
        counted over all search steps) that produced the returned example, 0 if none did.
    """

    x_adv: jax.Array
    success: jax.Array
    logits: jax.Array
    norm: jax.Array
    iterations: jax.Array


def is_success(logits: jax.Array, labels: jax.Array, targeted: bool) -> jax.Array:
    """(B,) bool: ``argmax != labels``, or ``argmax == labels`` for a targeted attack."""
    predicted = jnp.argmax(logits, axis=-1).astype(labels.dtype)
    return predicted == labels if targeted else predicted != labels


def assemble(
    logits_fn: Callable,
    x: jax.Array,
    x_adv: jax.Array,
    labels: jax.Array,
    *,
    targeted: bool,
    norm: str,
    iterations: jax.Array,
) -> AttackResult:
    """Re-predicts ``x_adv`` and builds the ``AttackResult``.

    Args:
      logits_fn: images (B, H, W, C) -> logits (B, C).
      x: (B, H, W, C) clean images.
      x_adv: (B, H, W, C) adversarial images.
      labels: (B,) true labels, or the targets when ``targeted``.
      targeted: whether success means reaching ``labels``.
      norm: ``"linf"`` or ``"l2"``.
      iterations: (B,) per-sample iteration counts.
    """
    logits = logits_fn(x_adv)
    return AttackResult(
        x_adv=x_adv,
        success=is_success(logits, labels, targeted),
        logits=logits,
        norm=_norms.NORMS[norm](x_adv - x),
        iterations=iterations.astype(jnp.int32),
    )
