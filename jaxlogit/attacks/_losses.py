"""Attack objectives: a loss maps ``(logits (B, C), labels (B,)) -> (B,)``, to be maximised.

Untargeted attacks maximise ``loss(logits, y)``; targeted attacks maximise
``-loss(logits, y_target)``, i.e. they minimise the loss of the target class.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from jaxlogit.errors import JaxlogitError

Loss = Callable[[jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy of ``labels`` (B,) under ``logits`` (B, C) -> (B,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """C&W / DLR-style margin ``max_{j != y} z_j - z_y`` (B,); positive iff misclassified."""
    return best_other_logit(logits, labels) - label_logit(logits, labels)


def label_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``z_y`` for each sample: (B, C), (B,) -> (B,)."""
    return jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]


def best_other_logit(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``max_{j != y} z_j`` for each sample: (B, C), (B,) -> (B,)."""
    is_label = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.bool_)
    return jnp.max(jnp.where(is_label, -jnp.inf, logits), axis=1)


LOSSES: dict[str, Loss] = {"ce": cross_entropy, "margin": margin}


def resolve(loss: str | Loss) -> Loss:
    """Returns the loss function for a name in ``LOSSES`` or a callable as it is."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise JaxlogitError(f"loss={loss!r} is unknown: pass one of {sorted(LOSSES)} or a function")
    return LOSSES[loss]


def objective(loss: Loss, logits: jax.Array, labels: jax.Array, targeted: bool) -> jax.Array:
    """The per-sample value an attack maximises (B,): ``loss`` or, targeted, ``-loss``."""
    value = loss(logits, labels)
    return -value if targeted else value


def input_gradient(
    logits_fn: Callable, x_adv: jax.Array, labels: jax.Array, loss: Loss, targeted: bool
) -> jax.Array:
    """Gradient of each sample's objective w.r.t. its own input, (B, H, W, C).

    Summing the per-sample objectives keeps samples independent (``logits_fn`` must not mix
    samples, i.e. BatchNorm in eval mode).
    """

    def total(images: jax.Array) -> jax.Array:
        return jnp.sum(objective(loss, logits_fn(images), labels, targeted))

    return jax.grad(total)(x_adv)
