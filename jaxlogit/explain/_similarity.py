"""Overlap between two attacks' supporting-class distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit.errors import JaxlogitError
from jaxlogit.explain._validate import is_concrete


def _check_counts(counts: jax.Array, name: str) -> None:
    """Raises unless concrete ``counts`` are non-negative with a positive total."""
    if is_concrete(counts):
        values = np.asarray(counts)
        if values.size == 0 or values.min() < 0 or values.sum() <= 0:
            raise JaxlogitError(
                f"{name} must be non-negative counts with a positive total; pass the counts from "
                "explain.supporting_classes"
            )


@jax.jit
def _coefficient(counts_a: jax.Array, counts_b: jax.Array) -> jax.Array:
    dtype = jnp.result_type(counts_a.dtype, counts_b.dtype, jnp.float32)
    p = counts_a.astype(dtype) / counts_a.sum().astype(dtype)
    q = counts_b.astype(dtype) / counts_b.sum().astype(dtype)
    return jnp.clip(jnp.sum(jnp.sqrt(p * q)), 0.0, 1.0)


def bhattacharyya(counts_a: jax.Array, counts_b: jax.Array) -> jax.Array:
    """Bhattacharyya coefficient ``sum_k sqrt(p_k q_k)`` of two normalised count vectors.

    1 for identical distributions, 0 for disjoint supports, symmetric, and unchanged when
    either count vector is scaled. The paper compares the supporting-class frequencies of two
    attacks with it (PGD-MIM 0.9662 on ResNet-50).

    Args:
      counts_a: non-negative counts ``(C,)`` (e.g. the ``counts`` of ``supporting_classes``).
      counts_b: non-negative counts of the same shape.

    Returns:
      A scalar in ``[0, 1]``.

    Raises:
      JaxlogitError: on shapes that differ, negative counts or an all-zero vector.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> round(float(explain.bhattacharyya(jnp.array([1, 3]), jnp.array([3, 1]))), 4)  # 2 sqrt(3/16)
      0.866
    """
    counts_a, counts_b = jnp.asarray(counts_a), jnp.asarray(counts_b)
    if counts_a.shape != counts_b.shape:
        raise JaxlogitError(
            f"counts_a {counts_a.shape} and counts_b {counts_b.shape} differ in shape; pass counts over "
            "the same classes"
        )
    _check_counts(counts_a, "counts_a")
    _check_counts(counts_b, "counts_b")
    return _coefficient(counts_a, counts_b)
