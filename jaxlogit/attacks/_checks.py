"""Input validation for the attacks: user mistakes become one-line ``JaxlogitError``s."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit.attacks import _geometry
from jaxlogit.errors import JaxlogitError


def _is_concrete(value: Any) -> bool:
    """Whether ``value`` holds values that can be checked now: not a tracer."""
    return not isinstance(value, jax.core.Tracer)


def _extremes(values: jax.Array) -> tuple[float, float]:
    """(min, max) of a concrete non-empty array, reduced on its device.

    ``ensure_compile_time_eval``: inside a user's ``jit`` a closed-over array is concrete but
    ``jnp`` operations on it would be traced.
    """
    with jax.ensure_compile_time_eval():
        return float(jnp.min(values)), float(jnp.max(values))


def _as_array(value: Any, name: str) -> Any:
    """Python lists and tuples as numpy arrays (``jnp.result_type`` cannot read them)."""
    if not isinstance(value, (list, tuple)):
        return value
    try:
        return np.asarray(value)
    except ValueError:
        raise JaxlogitError(f"{name} is a ragged sequence: pass an array (all rows the same shape)") from None


def _dtype(value: Any) -> np.dtype:
    """The dtype of an array, tracer or scalar (numpy's, for strings and objects too)."""
    return value.dtype if hasattr(value, "dtype") else jnp.result_type(value)


def images(x: Any) -> jax.Array:
    """Checks a batch of NHWC images in [0, 1] and returns it as float32 ``(B, H, W, C)``."""
    x = _as_array(x, "x")
    shape = np.shape(x)
    if len(shape) != 4:
        raise JaxlogitError(
            f"x has shape {shape}: pass a batch of images shaped (B, H, W, C) (add a batch axis)"
        )
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        raise JaxlogitError(
            f"x has shape {shape}, which looks like NCHW: pass NHWC images (x.transpose(0, 2, 3, 1))"
        )
    if not jnp.issubdtype(_dtype(x), jnp.floating):
        raise JaxlogitError(f"x has dtype {_dtype(x)}: pass float images in [0, 1] (e.g. x / 255)")
    x = jnp.asarray(x, jnp.float32)
    if _is_concrete(x) and x.size:
        low, high = _extremes(x)
        if np.isnan(low) or np.isnan(high):
            raise JaxlogitError(
                "x contains NaN pixels: pass finite images in [0, 1] (check how they were loaded)"
            )
        if low < 0.0 or high > 1.0:
            raise JaxlogitError(
                f"x has values in [{low:.3g}, {high:.3g}]: pass images in [0, 1] and put the "
                "mean/std normalisation inside logits_fn"
            )
    return x


def labels(y: Any, batch: int, name: str = "y") -> jax.Array:
    """Checks integer labels ``(B,)`` (non-negative) and returns them as int32."""
    y = _as_array(y, name)
    shape = np.shape(y)
    if shape != (batch,):
        raise JaxlogitError(f"{name} has shape {shape}: pass one integer label per image, ({batch},)")
    if not jnp.issubdtype(_dtype(y), jnp.integer):
        raise JaxlogitError(f"{name} has dtype {_dtype(y)}: pass integer class labels")
    y = jnp.asarray(y, jnp.int32)
    if _is_concrete(y) and batch and _extremes(y)[0] < 0:
        raise JaxlogitError(f"{name} contains negative labels: pass class indices in [0, C)")
    return y


def labels_within(y: jax.Array, num_classes: int, name: str = "y") -> None:
    """Raises if a label is not a class index of the ``num_classes`` logits."""
    highest = int(_extremes(y)[1]) if _is_concrete(y) and y.size else -1
    if highest >= num_classes:
        raise JaxlogitError(
            f"{name} contains label {highest} but logits_fn returns {num_classes} "
            f"classes: pass labels in [0, {num_classes})"
        )


def positive(name: str, value: Any) -> Any:
    """Checks a positive scalar setting (``eps``, ``step_size``, ...)."""
    if np.ndim(value) != 0 or (_is_concrete(value) and not float(value) > 0.0):
        raise JaxlogitError(f"{name}={value!r}: pass a number > 0")
    return value


def non_negative(name: str, value: Any) -> Any:
    """Checks a non-negative scalar setting (``decay``, ``confidence``, ``overshoot``)."""
    if np.ndim(value) != 0 or (_is_concrete(value) and float(value) < 0.0):
        raise JaxlogitError(f"{name}={value!r}: pass a number >= 0")
    return value


def count(name: str, value: Any, minimum: int = 1) -> int:
    """Checks an integer setting that fixes the program's structure (``steps``, ...)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise JaxlogitError(f"{name}={value!r}: pass an integer >= {minimum}")
    return int(value)


def keys_fit(key: Any, batch: int) -> None:
    """Raises unless ``key`` is one PRNG key or a batch of ``batch`` keys (one per image)."""
    if not hasattr(key, "dtype") or not _geometry.is_key_batch(key) or key.shape[0] == batch:
        return
    raise JaxlogitError(
        f"key holds {key.shape[0]} keys for {batch} images: pass one key, or one key per image "
        "(attacks.sample_keys(key, ids))"
    )


def attack_inputs(x: Any, y: Any, y_target: Any) -> tuple[jax.Array, jax.Array, jax.Array, bool]:
    """Validates an attack's arrays.

    Returns:
      ``(x, y, labels, targeted)``: float32 images, int32 true labels, the labels the attack
      aims at (``y_target`` if given, else ``y``) and whether the attack is targeted.
    """
    x = images(x)
    y = labels(y, x.shape[0])
    if y_target is None:
        return x, y, y, False
    return x, y, labels(y_target, x.shape[0], name="y_target"), True


def labels_fit(num_classes: int, y: jax.Array, labels: jax.Array, targeted: bool) -> None:
    """Raises if ``y`` (or the targets ``labels``) are not indices of ``num_classes`` classes."""
    labels_within(y, num_classes)
    if targeted:
        labels_within(labels, num_classes, "y_target")
