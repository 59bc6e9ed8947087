"""Input checks shared by the explain functions; each raises a one-line ``JaxlogitError``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import _validate
from jaxlogit.errors import JaxlogitError


def is_concrete(x: object) -> bool:
    """Whether ``x`` holds values (not a tracer inside ``jit``/``vmap``), so it can be checked."""
    return not isinstance(x, jax.core.Tracer)


def check_chunk_size(chunk_size: int) -> None:
    """Raises unless ``chunk_size`` is a positive int."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise JaxlogitError(f"chunk_size must be a positive int, got {chunk_size!r}; pass e.g. chunk_size=16")


def check_logits(z: jax.Array, name: str = "z") -> jax.Array:
    """Returns ``z`` as a floating ``(B, C)`` array, or raises naming the problem."""
    z = jnp.asarray(z)
    if z.ndim != 2:
        raise JaxlogitError(
            f"{name} must be logits of shape (B, C), got shape {z.shape}; add a batch axis with {name}[None]"
        )
    if not jnp.issubdtype(z.dtype, jnp.floating):
        raise JaxlogitError(
            f"{name} must be floating point to differentiate, got {z.dtype}; cast it with "
            ".astype(jnp.float32)"
        )
    _validate.finite(name, z, "logits")
    return z


def check_labels(y: jax.Array, batch: int, num_classes: int, name: str = "y") -> jax.Array:
    """Returns ``y`` as an int32 ``(B,)`` array of classes in ``[0, num_classes)``, or raises."""
    y = jnp.asarray(y)
    if y.shape != (batch,) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise JaxlogitError(
            f"{name} must be integer classes of shape ({batch},), got {y.dtype} {y.shape}; pass one class "
            "per row of z"
        )
    check_class_range(y, num_classes, name)
    return y.astype(jnp.int32)


def check_class_range(classes: jax.Array, num_classes: int, name: str) -> None:
    """Raises if concrete ``classes`` fall outside ``[0, num_classes)``."""
    if is_concrete(classes) and classes.size:
        values = np.asarray(classes)
        if values.min() < 0 or values.max() >= num_classes:
            raise JaxlogitError(
                f"{name} holds classes in [{values.min()}, {values.max()}] but there are only {num_classes}; "
                f"pass class indices in [0, {num_classes})"
            )
