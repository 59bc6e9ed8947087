"""Using a trained corrector: the eval-mode function g, corrected logits and accuracy."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxlogit import _validate, batching
from jaxlogit._weights import StaticFn, split_fn
from jaxlogit.corrector._module import Corrector


@dataclasses.dataclass(frozen=True)
class CorrectorEval:
    """``(params, z) -> g(z)``: a corrector module in eval mode (dropout off). Hashable by value."""

    module: Corrector

    def __call__(self, params: Any, z: jax.Array) -> jax.Array:
        """Logits (B, C) -> corrected logits (B, C)."""
        _validate.logits("z", z, self.module.num_classes, batched=False)
        return self.module.apply({"params": params}, z, deterministic=True)


def eval_fn(module: Corrector, params: Any) -> jax.tree_util.Partial:
    """The corrector as a pure eval-mode function ``g``: logits (B, C) -> corrected logits (B, C).

    The one way jaxlogit holds a trained corrector: a ``jax.tree_util.Partial`` binding
    ``params``, so its weights are traced inputs of every compiled program that takes ``g``
    (attacks on ``g∘f``, explain's Jacobians) and a new ``params`` of the same shapes reuses
    the compiled program. ``g`` is differentiable, deterministic (dropout off) and jit-able.

    Args:
      module: the ``Corrector``.
      params: its params.
    """
    return jax.tree_util.Partial(CorrectorEval(module), params)


@functools.partial(jax.jit, static_argnames="g_static")
def _apply(g_arrays: tuple, z: jax.Array, *, g_static: StaticFn) -> jax.Array:
    return g_static.bind(g_arrays)(z)


def corrected_logits(
    params: Any, module: Corrector, logits: np.ndarray, *, batch_size: int = 1024, put: Callable = lambda z: z
) -> np.ndarray:
    """Corrected logits of ``logits`` (N, C) -> (N, C) float32, computed in fixed-size batches.

    ``put`` places each batch (e.g. ``jax.device_put`` with a batch sharding).
    """
    logits = _validate.logits("logits", np.asarray(logits, np.float32), module.num_classes)
    g_static, g_arrays = split_fn(eval_fn(module, params), "the corrector")

    def apply(z: np.ndarray) -> jax.Array:
        return _apply(g_arrays, put(z), g_static=g_static)

    return batching.map_batches(apply, np.asarray(logits, np.float32), batch_size=batch_size)


def evaluate(
    params: Any,
    module: Corrector,
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 1024,
    put: Callable = lambda z: z,
) -> float:
    """Accuracy of the corrected logits: ``mean(argmax g(logits) == labels)``.

    Args:
      params: the corrector's params.
      module: the ``Corrector``.
      logits: (N, C) logits to correct.
      labels: (N,) true labels.
    """
    labels = _validate.class_labels("labels", labels, module.num_classes, batch=np.shape(logits)[0])
    corrected = corrected_logits(params, module, logits, batch_size=batch_size, put=put)
    return float(np.mean(np.argmax(corrected, axis=-1) == np.asarray(labels)))
