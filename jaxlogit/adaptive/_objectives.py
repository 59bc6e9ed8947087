"""What the adaptive attacks maximise, as objectives of ``attacks.linf_advance``.

Every objective judges success on the *defended* model: an iterate succeeds when
``argmax g(f(x_adv)) != y``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import attacks
from jaxlogit.adaptive._compose import compose
from jaxlogit.errors import JaxlogitError


def loss_on_defended(f: Callable, g: Callable, loss: str) -> jax.tree_util.Partial:
    """Maximise ``loss`` ("ce" or "margin") of ``g(f(x))``; side = labels (B,)."""
    return attacks.loss_objective(compose(f, g), loss)


@dataclasses.dataclass(frozen=True)
class LogitMatching:
    """``(f, g, x_adv, (labels, z_target)) -> Judged``: make ``f(x_adv)`` look like ``z_target``.

    Value ``-||f(x_adv) - z_target||^2`` (B,); success and logits from ``g(f(x_adv))``.
    """

    def __call__(self, f: Callable, g: Callable, x_adv: jax.Array, side) -> attacks.Judged:
        labels, z_target = side
        z = f(x_adv)
        corrected = g(z)
        value = -jnp.sum(jnp.square(z - z_target), axis=-1)
        success = jnp.argmax(corrected, axis=-1).astype(labels.dtype) != labels
        return attacks.Judged(value=value, success=success, logits=corrected)


def logit_matching(f: Callable, g: Callable) -> jax.tree_util.Partial:
    """The logit-matching objective of backbone ``f`` and corrector ``g``; side = (labels, z_target)."""
    return jax.tree_util.Partial(LogitMatching(), f, g)


def matching_targets(clean_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each image, the image of another class whose clean logits are nearest (L2).

    Deterministic: ties go to the lower index.

    Args:
      clean_logits: (N, C) clean logits of the evaluated images.
      labels: (N,) their labels; at least two classes must occur.

    Returns:
      (N,) int indices ``j`` with ``labels[j] != labels[i]``.
    """
    z = np.asarray(clean_logits, np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if classes.size < 2:
        raise JaxlogitError(
            f"logit matching needs images of at least two classes, got {labels.size} image(s) of "
            f"{classes.size} class(es): evaluate images of more classes"
        )
    squared = np.sum(z**2, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * z @ z.T
    distances[labels[:, None] == labels[None, :]] = np.inf
    return np.argmin(distances, axis=1)
