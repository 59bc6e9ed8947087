"""Jacobians of any corrector-like ``g_fn`` and the supporting scores derived from them."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxlogit import batching
from jaxlogit._weights import StaticFn, split_fn
from jaxlogit.errors import JaxlogitError
from jaxlogit.explain._validate import check_chunk_size, check_labels, check_logits

LogitsFn = Callable[[jax.Array], jax.Array]
"""A corrector-like function: logits ``(B, C)`` -> corrected logits ``(B, C_out)``."""

JACOBIAN_CHUNK_SIZE = 16
"""Default rows per compiled chunk of full Jacobians (C=1000, D=10,000: ~0.7 GB of work space)."""

SCORES_CHUNK_SIZE = 256
"""Default rows per compiled chunk of supporting scores (one VJP per row, little memory)."""


def _one_example(g_fn: LogitsFn) -> LogitsFn:
    """``g_fn`` on a single logit vector ``(C,)`` -> ``(C_out,)``."""
    return lambda z_row: g_fn(z_row[None])[0]


def output_classes(g_fn: LogitsFn, z: jax.Array) -> int:
    """``C_out`` of ``g_fn`` applied to ``z`` (B, C), found by shape evaluation only."""
    shape = jax.eval_shape(g_fn, jax.ShapeDtypeStruct((1, z.shape[1]), z.dtype)).shape
    return shape[-1]


@functools.partial(jax.jit, static_argnums=0)
def _jacobian_chunk(g_static: StaticFn, g_arrays: Sequence[jax.Array], z: jax.Array) -> jax.Array:
    g_fn = g_static.bind(g_arrays)
    return jax.vmap(jax.jacrev(_one_example(g_fn)))(z)


@functools.partial(jax.jit, static_argnums=0)
def _scores_chunk(g_static: StaticFn, g_arrays: Sequence[jax.Array], z: jax.Array, y: jax.Array) -> jax.Array:
    g_fn = g_static.bind(g_arrays)

    def one(z_row: jax.Array, label: jax.Array) -> jax.Array:
        out, pullback = jax.vjp(_one_example(g_fn), z_row)
        num_out = out.shape[0]
        # S = (e_y - 1/C_out)^T H: one VJP whose cotangent combines the two rows S needs.
        cotangent = jax.nn.one_hot(label, num_out, dtype=out.dtype) - 1.0 / num_out
        return pullback(cotangent)[0]

    return jax.vmap(one)(z, y)


def jacobian(g_fn: LogitsFn, z: jax.Array, *, chunk_size: int = JACOBIAN_CHUNK_SIZE) -> jax.Array:
    """Full Jacobians of ``g_fn`` at each row of ``z``, by ``jax.jacrev`` vmapped over the batch.

    Rows are processed in jitted chunks of ``chunk_size`` (the last one padded to a power of
    two), so the work space stays bounded for any batch and a new batch size compiles nothing
    new once each chunk shape has been seen. ``g_fn`` must treat rows independently (eval
    mode: no dropout, no batch statistics). Pass ``jax.tree_util.Partial(apply_fn, params)``
    to feed the weights as arguments (new weights do not recompile); a plain function or
    closure is a static argument of the compiled chunk. The result itself is ``B*C_out*C``
    numbers; for supporting classes use :func:`supporting_scores`, which never forms it.

    Args:
      g_fn: maps logits ``(B, C)`` to corrected logits ``(B, C_out)``.
      z: logits ``(B, C)``, floating point.
      chunk_size: rows per compiled chunk.

    Returns:
      ``H`` of shape ``(B, C_out, C)`` with ``H[b, i, k] = d g(z_b)_i / d z_b,k``.

    Raises:
      JaxlogitError: if ``z`` is not floating ``(B, C)`` or ``chunk_size`` is not positive.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> w = jnp.array([[1.0, 2.0], [3.0, 4.0]])
      >>> H = explain.jacobian(lambda z: z @ w, jnp.ones((3, 2)))
      >>> H.shape
      (3, 2, 2)
      >>> bool(jnp.allclose(H[0], w.T))
      True
    """
    z = check_logits(z)
    check_chunk_size(chunk_size)
    g_static, g_arrays = split_fn(g_fn, "g_fn")
    chunk_fn = functools.partial(_jacobian_chunk, g_static, g_arrays)
    return batching.map_batches(chunk_fn, z, batch_size=chunk_size, pad="pow2", on_device=True)


def supporting_scores(
    g_fn: LogitsFn, z: jax.Array, y: jax.Array, *, chunk_size: int = SCORES_CHUNK_SIZE
) -> jax.Array:
    """Supporting scores ``S_k = H[y, k] - mean_l H[l, k]`` without forming the Jacobian.

    By linearity ``S = (e_y - 1/C_out)^T H``, so one vector-Jacobian product per example (with
    that combined cotangent) gives exactly the two Jacobian rows ``S`` needs: the cost of one
    backward pass instead of ``C_out``. Same chunking and ``g_fn`` rules as :func:`jacobian`.

    Args:
      g_fn: maps logits ``(B, C)`` to corrected logits ``(B, C_out)``.
      z: logits ``(B, C)``, floating point (e.g. adversarial logits).
      y: true classes ``(B,)``, ints in ``[0, C_out)``.
      chunk_size: rows per compiled chunk.

    Returns:
      ``S`` of shape ``(B, C)``; large ``S_k`` means input class ``k`` pushes the corrected
      logit of the true class up more than it pushes the average class.

    Raises:
      JaxlogitError: on a malformed ``z`` or ``y``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> w = jnp.array([[1.0, 0.0], [5.0, 2.0]])   # g_0 = z_0 + 5 z_1, g_1 = 2 z_1
      >>> S = explain.supporting_scores(lambda z: z @ w, jnp.ones((1, 2)), jnp.array([0]))
      >>> S.tolist()   # [1 - (1 + 0) / 2, 5 - (5 + 2) / 2]
      [[0.5, 1.5]]
    """
    z = check_logits(z)
    y = check_labels(y, z.shape[0], output_classes(g_fn, z))
    check_chunk_size(chunk_size)
    g_static, g_arrays = split_fn(g_fn, "g_fn")
    chunk_fn = functools.partial(_scores_chunk, g_static, g_arrays)
    return batching.map_batches(chunk_fn, z, y, batch_size=chunk_size, pad="pow2", on_device=True)


def supporting_scores_from_jacobian(H: jax.Array, y: jax.Array) -> jax.Array:
    """``S_k = H[y, k] - mean_l H[l, k]`` from full Jacobians (see :func:`supporting_scores`).

    Args:
      H: Jacobians ``(B, C_out, C)`` as returned by :func:`jacobian`.
      y: true classes ``(B,)``.

    Returns:
      ``S`` of shape ``(B, C)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> H = jnp.array([[[1.0, 5.0], [0.0, 2.0]]])
      >>> explain.supporting_scores_from_jacobian(H, jnp.array([0])).tolist()
      [[0.5, 1.5]]
    """
    H = jnp.asarray(H)
    if H.ndim != 3:
        raise JaxlogitError(
            f"H must be Jacobians of shape (B, C_out, C), got shape {H.shape}; compute it with "
            "explain.jacobian"
        )
    y = check_labels(y, H.shape[0], H.shape[1])
    true_rows = jnp.take_along_axis(H, y[:, None, None], axis=1)[:, 0]
    return true_rows - H.mean(axis=1)
