"""Checks of user input at the library's boundaries: each raises a one-line ``JaxlogitError``
that names the value and the fix. Arrays are checked only when concrete (not inside ``jit``).

The attacks' array checks live in ``jaxlogit.attacks._checks`` and the explain functions' in
``jaxlogit.explain._validate`` (which uses ``finite`` from here).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from jaxlogit.errors import JaxlogitError


def is_concrete(value: Any) -> bool:
    """Whether ``value`` holds values (not a tracer inside ``jit``/``vmap``), so it can be checked."""
    return not isinstance(value, jax.core.Tracer)


def finite(name: str, values: Any, what: str = "values") -> None:
    """Raises if concrete ``values`` hold NaN or an infinity."""
    if not is_concrete(values) or np.size(values) == 0:
        return
    with jax.ensure_compile_time_eval():
        ok = bool(np.all(np.isfinite(np.asarray(values))))
    if not ok:
        raise JaxlogitError(
            f"{name} contains NaN or infinite {what}: pass finite {what} "
            "(check the data or the model that produced them)"
        )


def eps(value: Any, name: str = "eps") -> float:
    """Checks an L-inf budget on images in [0, 1]: a finite number in (0, 1].

    A value above 1 that would be a budget in pixel units gets a hint: ``--eps 16`` looks like
    16/255.
    """
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise JaxlogitError(f"{name}={value!r}: pass a number in (0, 1], e.g. 16/255 = 0.0627")
    value = float(value)
    if math.isfinite(value) and 1.0 < value <= 255.0:
        raise JaxlogitError(
            f"{name}={value:g} is outside (0, 1] (images are in [0, 1]); it looks like "
            f"{value:g}/255: pass {value / 255:.4g}"
        )
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise JaxlogitError(
            f"{name}={value!r} is outside (0, 1] (images are in [0, 1]): pass e.g. 16/255 = 0.0627"
        )
    return value


def positive_number(name: str, value: Any) -> float:
    """Checks a finite number > 0 (a learning rate, a step size)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (math.isfinite(float(value)) and float(value) > 0.0)
    ):
        raise JaxlogitError(f"{name}={value!r}: pass a finite number > 0")
    return float(value)


def number_in(name: str, value: Any, low: float, high: float, *, high_open: bool = False) -> float:
    """Checks a finite number in ``[low, high]`` (or ``[low, high)``)."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = number and math.isfinite(float(value)) and low <= float(value)
    ok = ok and (float(value) < high if high_open else float(value) <= high)
    if not ok:
        closing = ")" if high_open else "]"
        raise JaxlogitError(f"{name}={value!r}: pass a number in [{low:g}, {high:g}{closing}")
    return float(value)


def positive_int(name: str, value: Any) -> int:
    """Checks an integer >= 1 (a size, a count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise JaxlogitError(f"{name}={value!r}: pass an integer >= 1")
    return int(value)


def logits(name: str, z: Any, num_classes: int | None = None, *, batched: bool = True) -> Any:
    """Checks logits ``(B, C)`` (``(..., C)`` unless ``batched``): ``C == num_classes`` if given,
    finite when concrete."""
    shape = np.shape(z)
    if (len(shape) != 2) if batched else (len(shape) == 0):
        raise JaxlogitError(f"{name} must be logits of shape (B, C), got shape {shape}; add a batch axis")
    if num_classes is not None and shape[-1] != num_classes:
        raise JaxlogitError(
            f"{name} has {shape[-1]} logits per row but the corrector takes {num_classes}: "
            "pass the logits of the backbone it was trained on"
        )
    finite(name, z, "logits")
    return z


def class_labels(name: str, y: Any, num_classes: int, batch: int | None = None) -> np.ndarray:
    """Checks integer class labels ``(B,)`` in ``[0, num_classes)``; returns them as int32 numpy."""
    y = np.asarray(y)
    if y.ndim != 1 or (batch is not None and y.shape[0] != batch) or not np.issubdtype(y.dtype, np.integer):
        want = f"({batch},)" if batch is not None else "(N,)"
        raise JaxlogitError(f"{name} must be integer class labels of shape {want}, got {y.dtype} {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise JaxlogitError(
            f"{name} holds labels in [{y.min()}, {y.max()}] but there are {num_classes} "
            "classes: "
            f"pass labels in [0, {num_classes})"
        )
    return y.astype(np.int32)
