"""Chunked evaluation of a jitted per-chunk function, and ``g_fn`` split for ``jax.jit``.

Two small tools shared by the explain functions:

* :func:`split_callable` / :func:`merge_callable` separate the arrays held by a pytree callable
  (e.g. ``jax.tree_util.Partial(apply_fn, params)``) from its hashable structure, so the
  arrays enter a jitted function as arguments (new weights do not recompile) while plain
  functions and closures are static arguments.
* :func:`map_in_chunks` runs a function over fixed-size chunks of a batch. Full chunks have
  ``chunk_size`` rows; the remainder is padded to the next power of two (at most
  ``chunk_size``), so a jitted chunk function compiles for at most
  ``log2(chunk_size) + 1`` shapes in total, whatever the batch sizes, and a small batch does
  not pay for a whole chunk (a full Jacobian is expensive per row).

Unlike ``jaxlogit.batching.map_batches`` (fixed padding, numpy results), this pads the
remainder to a power of two only, returns device arrays and also works inside ``jax.jit``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit.errors import JaxlogitError
from jaxlogit.explain._validate import check_chunk_size

LogitsFn = Callable[[jax.Array], jax.Array]
"""A corrector-like function: logits ``(B, C)`` -> corrected logits ``(B, C_out)``."""


def split_callable(fn: LogitsFn) -> tuple[Hashable, list[jax.Array]]:
    """Splits ``fn`` into a hashable static part and the list of arrays it holds as leaves.

    Args:
      fn: any callable; a pytree callable such as ``jax.tree_util.Partial`` contributes its
        array leaves to the dynamic part, anything else is static.

    Returns:
      ``(static, arrays)`` such that ``merge_callable(static, arrays)`` rebuilds ``fn``.

    Raises:
      JaxlogitError: if a non-array leaf of ``fn`` cannot be hashed.
    """
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    is_array = tuple(isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves)
    static_leaves = tuple(None if array else leaf for leaf, array in zip(leaves, is_array))
    arrays = [jnp.asarray(leaf) for leaf, array in zip(leaves, is_array) if array]
    static = (treedef, is_array, static_leaves)
    try:
        hash(static)
    except TypeError as error:
        raise JaxlogitError(
            f"g_fn holds an unhashable non-array value ({error}); close over it in a function "
            "or wrap g_fn as jax.tree_util.Partial(apply_fn, params)"
        ) from None
    return static, arrays


def merge_callable(static: Hashable, arrays: Sequence[jax.Array]) -> LogitsFn:
    """Inverse of :func:`split_callable`."""
    treedef, is_array, static_leaves = static
    array_iter = iter(arrays)
    leaves = [next(array_iter) if array else leaf for leaf, array in zip(static_leaves, is_array)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def padded_size(rows: int, chunk_size: int) -> int:
    """Rows a chunk of ``rows`` (1..chunk_size) is padded to: the next power of two, capped."""
    return min(chunk_size, 1 << (rows - 1).bit_length())


def _pad_rows(x: jax.Array | np.ndarray, size: int) -> jax.Array | np.ndarray:
    """Pads ``x`` (n, ...) to ``size`` rows by repeating its last row (keeps inputs realistic)."""
    missing = size - x.shape[0]
    if missing == 0:
        return x
    xp = np if isinstance(x, np.ndarray) else jnp
    return xp.concatenate([x, xp.repeat(x[-1:], missing, axis=0)], axis=0)


def _rows(out: Any, rows: int) -> Any:
    """The first ``rows`` rows of every array in ``out`` (no op when nothing was padded)."""
    return jax.tree.map(lambda o: o if o.shape[0] == rows else o[:rows], out)


def map_in_chunks(fn: Callable[..., Any], arrays: Sequence[jax.Array], chunk_size: int) -> Any:
    """Applies ``fn`` to aligned row chunks of ``arrays`` and concatenates the outputs.

    Args:
      fn: maps chunks ``(n, ...)`` of each array to a pytree of arrays with leading dim ``n``;
        rows must be independent (padding rows are computed and dropped).
      arrays: arrays with the same leading dimension B.
      chunk_size: rows per full chunk.

    Returns:
      ``fn``'s output for all B rows (leading dim B; zero rows if B == 0).
    """
    check_chunk_size(chunk_size)
    # Slicing and padding concrete inputs on the host compiles nothing per batch size.
    arrays = [a if isinstance(a, jax.core.Tracer) else np.asarray(a) for a in arrays]
    batch = arrays[0].shape[0]
    if batch == 0:
        shapes = jax.eval_shape(fn, *[jax.ShapeDtypeStruct((1,) + a.shape[1:], a.dtype) for a in arrays])
        return jax.tree.map(lambda s: jnp.zeros((0,) + s.shape[1:], s.dtype), shapes)
    outputs = []
    for start in range(0, batch, chunk_size):
        rows = min(chunk_size, batch - start)
        chunk = [_pad_rows(a[start : start + rows], padded_size(rows, chunk_size)) for a in arrays]
        outputs.append(_rows(fn(*chunk), rows))
    if len(outputs) == 1:
        return outputs[0]
    return jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=0), *outputs)
