"""Running a per-sample loop body only on the samples still active, a fixed-size chunk at a time.

An attack whose samples stop at different iterations wastes work if every iteration still runs
on the whole batch. Here each iteration gathers the active rows in order, runs the body on
``ceil(n / chunk)`` chunks of ``chunk`` rows each (a ``lax.fori_loop``, so shapes stay static
and the body compiles once) and scatters every chunk's result back. Finished samples then cost
nothing but their share of the last, partly padded chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

PyTree = Any


def active_rows(active: jax.Array, chunk: int) -> jax.Array:
    """Indices of the active rows in order, padded with the out-of-range index B.

    Args:
      active: (B,) bool.
      chunk: the chunk size; the result is padded to a multiple of it.

    Returns:
      (ceil(B / chunk) * chunk,) int32 row indices; entries past the active count equal B.
    """
    batch = active.shape[0]
    (rows,) = jnp.nonzero(active, size=-(-batch // chunk) * chunk, fill_value=batch)
    return rows.astype(jnp.int32)


def gather_rows(tree: PyTree, rows: jax.Array) -> PyTree:
    """Rows ``rows`` (n,) of every leaf (B, ...) -> (n, ...); out-of-range rows read zeros."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, rows, axis=0, mode="fill", fill_value=0), tree)


def scatter_rows(tree: PyTree, rows: jax.Array, updates: PyTree) -> PyTree:
    """Writes ``updates`` (n, ...) into rows ``rows`` (n,) of ``tree`` (B, ...).

    Out-of-range rows (the padding of :func:`active_rows`) are dropped.
    """
    return jax.tree.map(lambda leaf, new: leaf.at[rows].set(new, mode="drop"), tree, updates)


def on_active_rows(
    body: Callable[[PyTree, PyTree], PyTree], active: jax.Array, inputs: PyTree, state: PyTree, *, chunk: int
) -> PyTree:
    """Updates ``state`` by ``body`` on the active rows only, ``chunk`` rows per call.

    Args:
      body: ``(inputs_rows, state_rows) -> new state_rows`` on ``chunk`` rows, row-wise (each
        output row depends on the same row of its inputs only). Padding rows come in as zeros
        (so a boolean "active" leaf of the state is False there) and are discarded.
      active: (B,) bool, the rows to update.
      inputs: read-only pytree of (B, ...) leaves.
      state: pytree of (B, ...) leaves, the same structure as ``body``'s output.
      chunk: rows per ``body`` call (static), at most B.

    Returns:
      ``state`` with the active rows replaced by ``body``'s result; other rows unchanged.
    """
    if active.shape[0] == 0:  # an empty batch: nothing to update, no row to slice a chunk from
        return state
    order = active_rows(active, chunk)
    count = jnp.sum(active.astype(jnp.int32))

    def run_chunk(index: jax.Array, state: PyTree) -> PyTree:
        rows = lax.dynamic_slice_in_dim(order, index * chunk, chunk)
        return scatter_rows(state, rows, body(gather_rows(inputs, rows), gather_rows(state, rows)))

    return lax.fori_loop(0, (count + chunk - 1) // chunk, run_chunk, state)
