"""The defended model g∘f as a differentiable ``logits_fn`` with every weight a traced input."""

from __future__ import annotations

from collections.abc import Callable

import jax


def _apply_composed(f: Callable, g: Callable, x: jax.Array) -> jax.Array:
    return g(f(x))


def compose(f: Callable, g: Callable) -> jax.tree_util.Partial:
    """``g∘f``: images (B, H, W, C) in [0, 1] -> corrected logits (B, C).

    Both functions are bound as arguments of a ``jax.tree_util.Partial``, so when they are
    partials themselves (``Backbone.logits_fn()``, ``corrector.eval_fn``) their weights are traced
    inputs of the attack programs, and a new composition of same-shaped weights reuses the
    compiled program.

    Args:
      f: the backbone, images -> logits (B, C).
      g: the corrector, logits (B, C) -> corrected logits (B, C), eval mode.
    """
    return jax.tree_util.Partial(_apply_composed, f, g)
