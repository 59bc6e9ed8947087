"""Supporting classes: the classes whose logits the corrector relies on most."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlogit.errors import JaxlogitError
from jaxlogit.explain._jacobian import LogitsFn, supporting_scores

PAPER_K = 10
"""The paper's k (per-example classes and reported classes), chosen for C = 1000."""

SMALL_FRACTION = 0.3
"""Fraction of the classes used as k when ``C`` is small (10 classes -> 3)."""


def scaled_k(num_classes: int) -> int:
    """The k for supporting classes on ``num_classes`` classes: ``min(10, max(1, round(0.3 C)))``.

    The paper takes the 10 largest ``S_k`` per example and reports the 10 most frequent classes,
    on ImageNet (C = 1000). With few classes "10 of 10" is every class and says nothing, so
    k shrinks to about 30% of the classes (3 of 10, 6 of 20) and reaches the paper's 10 from
    C = 34 on, keeping k = 10 for ImageNet.

    Args:
      num_classes: C, at least 1.

    Returns:
      k, with ``1 <= k <= min(10, C)``.

    Example:
      >>> from jaxlogit import explain
      >>> [explain.scaled_k(c) for c in (2, 10, 20, 100, 1000)]
      [1, 3, 6, 10, 10]
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise JaxlogitError(
            f"num_classes must be a positive int, got {num_classes!r}; pass the number of classes C"
        )
    return min(PAPER_K, max(1, round(SMALL_FRACTION * num_classes)))


def _check_k(name: str, value: int, num_classes: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= num_classes:
        raise JaxlogitError(
            f"{name}={value!r} must be an int in [1, {num_classes}]; "
            f"use explain.scaled_k({num_classes}) = {scaled_k(num_classes)}"
        )


def supporting_classes(
    scores: jax.Array, per_example: int = 10, top: int = 10
) -> tuple[jax.Array, jax.Array]:
    """The most frequent supporting classes over a set of examples.

    Each example votes for its ``per_example`` classes with the largest ``S_k`` (ties: the
    lower class index, as ``jax.lax.top_k``); the classes with the most votes are returned,
    ties again broken by the lower class index. Classes with zero votes can appear when
    ``top`` exceeds the number of classes voted for. Use :func:`scaled_k` for both counts
    when ``C`` is not 1000.

    Args:
      scores: supporting scores ``S`` of shape ``(B, C)`` (see ``supporting_scores``).
      per_example: classes each example votes for, in ``[1, C]``.
      top: classes to return, in ``[1, C]``.

    Returns:
      ``(classes, counts)``: ``classes`` int32 ``(top,)``, most votes first; ``counts`` int32
      ``(C,)``, the votes of every class (sums to ``B * per_example``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> S = jnp.array([[0.0, 3.0, 2.0, 1.0], [1.0, 4.0, 0.0, 5.0], [0.0, 2.0, 0.0, 3.0]])
      >>> classes, counts = explain.supporting_classes(S, per_example=2, top=2)
      >>> classes.tolist(), counts.tolist()
      ([1, 3], [0, 3, 1, 2])
    """
    scores = jnp.asarray(scores)
    if scores.ndim != 2:
        raise JaxlogitError(
            f"scores must have shape (B, C), got {scores.shape}; pass explain.supporting_scores(...)"
        )
    num_classes = scores.shape[1]
    _check_k("per_example", per_example, num_classes)
    _check_k("top", top, num_classes)
    return _vote(scores, per_example, top)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _vote(scores: jax.Array, per_example: int, top: int) -> tuple[jax.Array, jax.Array]:
    _, voted = jax.lax.top_k(scores, per_example)  # (B, per_example)
    counts = jnp.bincount(voted.ravel(), length=scores.shape[1]).astype(jnp.int32)
    classes = jnp.argsort(-counts, stable=True)[:top].astype(jnp.int32)
    return classes, counts


class InstanceScores(NamedTuple):
    """The top supporting classes of one example under one attack.

    Attributes:
      classes: int32 ``(k,)``, largest ``S_k`` first.
      scores: ``(k,)``, the matching ``S_k``.
    """

    classes: jax.Array
    scores: jax.Array


def instance_scores(
    g_fn: LogitsFn, z_by_attack: Mapping[str, jax.Array], y: int, k: int = 10
) -> dict[str, InstanceScores]:
    """The top-``k`` supporting scores of one example under each attack (the paper's Figure 4).

    Args:
      g_fn: maps logits ``(B, C)`` to corrected logits ``(B, C_out)``.
      z_by_attack: attack name -> that attack's logits ``(C,)`` for the example.
      y: the example's true class.
      k: classes per attack, in ``[1, C]`` (see :func:`scaled_k`).

    Returns:
      attack name -> :class:`InstanceScores`, in the order of ``z_by_attack``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> w = jnp.array([[1.0, 0.0, 0.0], [4.0, 1.0, 0.0], [2.0, 0.0, 1.0]])  # g_0 uses z_1, z_2
      >>> out = explain.instance_scores(lambda z: z @ w, {"pgd": jnp.zeros(3)}, y=0, k=2)
      >>> out["pgd"].classes.tolist()
      [1, 2]
    """
    if not z_by_attack:
        raise JaxlogitError("z_by_attack is empty; pass {attack_name: logits (C,)} for at least one attack")
    names = list(z_by_attack)
    z = jnp.stack([jnp.asarray(z_by_attack[name]) for name in names])
    if z.ndim != 2:
        raise JaxlogitError(
            f"each z_by_attack value must be logits of shape (C,), got {z.shape[1:]}; pass one example's "
            "logits"
        )
    _check_k("k", k, z.shape[1])
    scores = supporting_scores(g_fn, z, jnp.full((len(names),), y, jnp.int32))
    top_scores, top_classes = jax.lax.top_k(scores, k)
    return {
        name: InstanceScores(top_classes[i].astype(jnp.int32), top_scores[i]) for i, name in enumerate(names)
    }
