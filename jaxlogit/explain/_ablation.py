"""Ablation of supporting classes: lower their logits and see whether the correction breaks."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlogit import batching
from jaxlogit._weights import StaticFn, split_fn
from jaxlogit.errors import JaxlogitError
from jaxlogit.explain._jacobian import LogitsFn, output_classes
from jaxlogit.explain._validate import check_chunk_size, check_class_range, check_labels, check_logits

PREDICT_CHUNK_SIZE = 1024
"""Rows per compiled chunk when predicting."""


class AblationResult(NamedTuple):
    """What lowering the supporting classes' logits does to the corrector's predictions.

    Attributes:
      pred_before: int32 ``(B,)``, ``argmax g(z_adv)``.
      pred_after: int32 ``(B,)``, ``argmax g(z_adv - amount * [k in supporting])``.
      failure_rate_before: scalar, fraction with ``pred_before != y``.
      failure_rate: scalar, fraction with ``pred_after != y`` (the correction fails).
      adversarial_rate: scalar, fraction with ``pred_after == adv_pred`` (back at the
        adversarial class).
      broken_rate: scalar, among examples with ``pred_before == y``, the fraction with
        ``pred_after != y``; NaN if there are none.
    """

    pred_before: jax.Array
    pred_after: jax.Array
    failure_rate_before: jax.Array
    failure_rate: jax.Array
    adversarial_rate: jax.Array
    broken_rate: jax.Array


@functools.partial(jax.jit, static_argnums=0)
def _predict_chunk(g_static: StaticFn, g_arrays: Sequence[jax.Array], z: jax.Array) -> jax.Array:
    return jnp.argmax(g_static.bind(g_arrays)(z), axis=-1).astype(jnp.int32)


def _lowered(z: jax.Array, supporting: jax.Array, amount: float) -> jax.Array:
    """``z`` with ``amount`` subtracted once from each listed class (per row or shared)."""
    listed = jnp.minimum(
        jax.nn.one_hot(supporting, z.shape[1], dtype=z.dtype).sum(axis=-2), 1
    )  # (C,) or (B, C)
    return z - amount * listed


def ablate_supporting(
    g_fn: LogitsFn,
    z_adv: jax.Array,
    y: jax.Array,
    adv_pred: jax.Array,
    supporting: jax.Array,
    amount: float = 20.0,
    *,
    chunk_size: int = PREDICT_CHUNK_SIZE,
) -> AblationResult:
    """Subtracts ``amount`` from the supporting classes' logits before the corrector.

    The paper's test that the supporting classes carry the correction: after lowering them
    by 20 the correction should fail and the prediction return to the adversarial class.
    As a control, pass random classes as ``supporting``.

    Args:
      g_fn: maps logits ``(B, C)`` to corrected logits ``(B, C)``.
      z_adv: adversarial logits ``(B, C)``.
      y: true classes ``(B,)``.
      adv_pred: the backbone's adversarial predictions ``(B,)`` (``argmax z_adv``).
      supporting: classes to lower, ``(K,)`` shared by all examples or ``(B, K)`` per example.
      amount: subtracted from each listed logit once.
      chunk_size: rows per compiled chunk.

    Returns:
      An :class:`AblationResult`.

    Raises:
      JaxlogitError: on malformed shapes or classes out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> g_fn = lambda z: z.at[:, 0].add(z[:, 2])   # class 0 is corrected by class 2's logit
      >>> z_adv = jnp.array([[1.0, 5.0, 6.0]])       # adversarial class 1; g(z) picks 0 (7 > 6)
      >>> res = explain.ablate_supporting(g_fn, z_adv, jnp.array([0]), jnp.array([1]), jnp.array([2]))
      >>> res.pred_before.tolist(), res.pred_after.tolist(), float(res.adversarial_rate)
      ([0], [1], 1.0)
    """
    z_adv = check_logits(z_adv, "z_adv")
    batch, num_classes = z_adv.shape
    num_out = output_classes(g_fn, z_adv)
    y = check_labels(y, batch, num_out)
    adv_pred = check_labels(adv_pred, batch, num_out, "adv_pred")
    supporting = jnp.asarray(supporting)
    well_shaped = supporting.ndim in (1, 2) and supporting.shape[:-1] in ((), (batch,))
    if not well_shaped or not jnp.issubdtype(supporting.dtype, jnp.integer):
        raise JaxlogitError(
            f"supporting must be integer classes (K,) or ({batch}, K), got {supporting.dtype} "
            f"{supporting.shape}; "
            "pass the classes from explain.supporting_classes"
        )
    check_class_range(supporting, num_classes, "supporting")
    check_chunk_size(chunk_size)
    g_static, g_arrays = split_fn(g_fn, "g_fn")
    predict = functools.partial(_predict_chunk, g_static, g_arrays)
    pred_before = batching.map_batches(predict, z_adv, batch_size=chunk_size, pad="pow2", on_device=True)
    lowered = _lowered(z_adv, supporting, amount)
    pred_after = batching.map_batches(predict, lowered, batch_size=chunk_size, pad="pow2", on_device=True)
    corrected_before = pred_before == y
    broken = corrected_before & (pred_after != y)
    return AblationResult(
        pred_before=pred_before,
        pred_after=pred_after,
        failure_rate_before=jnp.mean(pred_before != y),
        failure_rate=jnp.mean(pred_after != y),
        adversarial_rate=jnp.mean(pred_after == adv_pred),
        broken_rate=jnp.sum(broken) / jnp.sum(corrected_before),
    )
