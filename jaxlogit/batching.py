"""Run a jitted function over a large array in batches of few shapes (few compilations).

:func:`map_batches` is the one batch mapper of jaxlogit. Its ``pad`` policy says which shapes
the function sees:

* ``"full"``: every call sees exactly ``batch_size`` rows (the last batch is padded), so a
  jitted function compiles once. For host loops over many rows (attacks, corrector, backbone).
* ``"pow2"``: full batches have ``batch_size`` rows and the remainder is padded to the next
  power of two (at most ``batch_size``): at most ``log2(batch_size) + 1`` shapes in all,
  and a small batch does not pay for a whole one (explain's per-row Jacobians are expensive).

Padding repeats the last row (inputs stay realistic) and is dropped from the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit.errors import JaxlogitError

PAD_POLICIES = ("full", "pow2")


def pad_to(x: np.ndarray | jax.Array, size: int) -> np.ndarray | jax.Array:
    """Pads ``x`` (n, ...) along axis 0 to ``size`` rows by repeating its last row (numpy or jax)."""
    n = x.shape[0]
    if n == size:
        return x
    xp = np if isinstance(x, np.ndarray) else jnp
    pad = xp.repeat(x[-1:], size - n, axis=0)
    return xp.concatenate([x, pad], axis=0)


def padded_rows(rows: int, batch_size: int, pad: str = "full") -> int:
    """Rows a batch of ``rows`` (1..batch_size) is padded to under the ``pad`` policy."""
    if pad == "full":
        return batch_size
    return min(batch_size, 1 << (rows - 1).bit_length())


def _check(batch_size: int, pad: str) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise JaxlogitError(f"batch_size must be a positive int, got {batch_size!r}; pass e.g. batch_size=64")
    if pad not in PAD_POLICIES:
        raise JaxlogitError(f"unknown pad policy {pad!r}: choose one of {', '.join(PAD_POLICIES)}")


def _sliceable(a: Any) -> Any:
    """Concrete inputs as numpy arrays (slicing them on the host compiles nothing); tracers as they are."""
    if isinstance(a, (jax.core.Tracer, np.ndarray)):
        return a
    return np.asarray(a)


def _first_rows(out: Any, rows: int) -> Any:
    """The first ``rows`` rows of every array in ``out`` (no op when nothing was padded)."""
    return jax.tree.map(lambda o: o if o.shape[0] == rows else o[:rows], out)


def _empty(fn: Callable, arrays: list, rows: int, on_device: bool) -> Any:
    """``fn``'s outputs for zero rows, from its output shapes on ``rows`` rows (nothing runs)."""
    shapes = jax.eval_shape(fn, *[jax.ShapeDtypeStruct((rows,) + a.shape[1:], a.dtype) for a in arrays])
    xp = jnp if on_device else np
    return jax.tree.map(lambda s: xp.zeros((0,) + s.shape[1:], s.dtype), shapes)


def map_batches(
    fn: Callable, *arrays: Any, batch_size: int, pad: str = "full", on_device: bool = False
) -> Any:
    """Applies ``fn`` to aligned row batches of ``arrays`` and concatenates the outputs on axis 0.

    Args:
      fn: maps batches ``(n, ...)`` of each array to a pytree of arrays with leading dim ``n``;
        rows must be independent (padding rows are computed and dropped).
      *arrays: arrays (numpy, jax, or tracers inside ``jax.jit``) with the same leading dim N.
      batch_size: rows per full batch.
      pad: ``"full"`` or ``"pow2"`` (see the module docstring).
      on_device: return jax arrays (required inside ``jax.jit``); otherwise each batch's
        outputs are fetched to the host as it finishes and numpy arrays are returned.

    Returns:
      ``fn``'s outputs for all N rows, with ``fn``'s tree structure (zero rows if N == 0).

    Raises:
      JaxlogitError: if ``batch_size`` is not a positive int or ``pad`` is unknown.
    """
    _check(batch_size, pad)
    arrays = [_sliceable(a) for a in arrays]
    n = arrays[0].shape[0]
    if n == 0:
        return _empty(fn, arrays, padded_rows(1, batch_size, pad), on_device)
    outputs = []
    for start in range(0, n, batch_size):
        rows = min(batch_size, n - start)
        size = padded_rows(rows, batch_size, pad)
        out = fn(*[pad_to(a[start : start + rows], size) for a in arrays])
        if not on_device:
            out = jax.tree.map(np.asarray, jax.device_get(out))
        outputs.append(_first_rows(out, rows))
    if on_device:
        if len(outputs) == 1:
            return outputs[0]
        return jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=0), *outputs)
    return jax.tree.map(lambda *parts: np.concatenate(parts, axis=0), *outputs)
