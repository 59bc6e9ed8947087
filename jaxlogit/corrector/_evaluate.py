"""Using a trained corrector: the eval-mode function g, predictions and accuracy."""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

from jaxlogit import _validate, batching
from jaxlogit.corrector._module import Corrector


def g_fn(module: Corrector, params: Any) -> Callable[[jax.Array], jax.Array]:
    """The corrector as a pure eval-mode function ``g``: logits (B, C) -> corrected logits (B, C).

    ``g`` is differentiable and jit-able (``explain`` takes its Jacobian, adaptive attacks
    differentiate through it).
    """

    def g(z: jax.Array) -> jax.Array:
        _validate.logits("z", z, module.num_classes, batched=False)
        return module.apply({"params": params}, z, deterministic=True)

    return g


@functools.lru_cache(maxsize=None)
def _jitted_apply(module: Corrector) -> Callable:
    """``(params, z) -> g(z)`` compiled once per module (and per input shape)."""
    return jax.jit(lambda params, z: module.apply({"params": params}, z, deterministic=True))


def predict(
    params: Any, module: Corrector, logits: np.ndarray, *, batch_size: int = 1024, put: Callable = lambda z: z
) -> np.ndarray:
    """Corrected logits of ``logits`` (N, C) -> (N, C) float32, computed in fixed-size batches.

    ``put`` places each batch (e.g. ``jax.device_put`` with a batch sharding).
    """
    logits = _validate.logits("logits", np.asarray(logits, np.float32), module.num_classes)
    apply = _jitted_apply(module)
    return batching.map_batches(lambda z: apply(params, put(z)), np.asarray(logits, np.float32), batch_size=batch_size)


def evaluate(
    params: Any, module: Corrector, logits: np.ndarray, labels: np.ndarray, *, batch_size: int = 1024, put: Callable = lambda z: z
) -> float:
    """Accuracy of the corrected logits: ``mean(argmax g(logits) == labels)``.

    Args:
      params: the corrector's params.
      module: the ``Corrector``.
      logits: (N, C) logits to correct.
      labels: (N,) true labels.
    """
    labels = _validate.class_labels("labels", labels, module.num_classes, batch=np.shape(logits)[0])
    corrected = predict(params, module, logits, batch_size=batch_size, put=put)
    return float(np.mean(np.argmax(corrected, axis=-1) == np.asarray(labels)))
