"""Run a jitted function over a large array in fixed-size batches (no recompiles)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np


def pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """Pads ``x`` (n, ...) along axis 0 to ``size`` rows by repeating its last row."""
    n = x.shape[0]
    if n == size:
        return x
    pad = np.repeat(x[-1:], size - n, axis=0)
    return np.concatenate([x, pad], axis=0)


def map_batches(fn: Callable, *arrays: np.ndarray, batch_size: int) -> np.ndarray | tuple:
    """Applies ``fn`` to aligned batches of ``arrays`` and concatenates the outputs on axis 0.

    Every call of ``fn`` sees exactly ``batch_size`` rows (the last batch is padded and the
    padding dropped from the output), so a jitted ``fn`` compiles once.

    Args:
      fn: maps batches ``(batch_size, ...)`` of each array to an array or a tuple of arrays
        whose leading dimension is ``batch_size``.
      *arrays: host arrays with the same leading dimension N.
      batch_size: rows per call.

    Returns:
      ``fn``'s outputs for all N rows, as numpy arrays (a tuple if ``fn`` returns one).
    """
    n = arrays[0].shape[0]
    outputs = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = [pad_to(np.asarray(a[start:stop]), batch_size) for a in arrays]
        out = jax.device_get(fn(*batch))
        outputs.append(jax.tree.map(lambda o: np.asarray(o)[: stop - start], out))
    return jax.tree.map(lambda *parts: np.concatenate(parts, axis=0), *outputs)
