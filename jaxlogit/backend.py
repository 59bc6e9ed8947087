"""Which code the hardware gets: the one place that decides the per-backend choices.

jaxlogit's convolution formulations (``models._conv.fast_conv``) and max-pool gradient
(``models._pool.max_pool``) are tuned for XLA:CPU. On GPU and TPU, XLA's own convolution
rewriter (cuDNN) must see ordinary convolutions and their autodiff gradients, which the
per-layer formulations and their ``optimization_barrier`` hide. :func:`conv_path` picks:

- ``"cpu"``: the XLA:CPU formulations (today's path on CPU, bitwise unchanged);
- ``"plain"``: ``lax.conv_general_dilated`` and ``nn.max_pool`` with ordinary autodiff;

from, in order, the function argument, ``$JAXLOGIT_CONV`` (``cpu`` or ``plain``) and
``jax.default_backend()`` (``cpu`` -> ``"cpu"``, anything else -> ``"plain"``).

The same choice sets DeepFool's default chunk (:func:`deepfool_chunk`). Choices that are facts
of the XLA:CPU platform rather than tuning follow the platform alone (:func:`on_cpu`): the
Eigen convolution option of ``_xla.jit``, compiling ``models.init`` unoptimised, and waiting
for every corrector step (XLA:CPU's all-reduce across forced host devices deadlocked).
"""

from __future__ import annotations

import os

import jax

from jaxlogit.errors import JaxlogitError

ENV_VAR = "JAXLOGIT_CONV"
CPU, PLAIN = "cpu", "plain"
CONV_PATHS = (CPU, PLAIN)
# DeepFool's chunk on the XLA:CPU path: 8-16 samples measured fastest (the K - 1 batched vjps'
# activations stay in the CPU caches).
CPU_DEEPFOOL_CHUNK = 16


def on_cpu() -> bool:
    """Whether JAX's default backend is XLA:CPU."""
    return jax.default_backend() == "cpu"


def conv_path(choice: str | None = None) -> str:
    """``"cpu"`` or ``"plain"``: which convolution and max-pool the backbones run.

    Args:
      choice: ``"cpu"``, ``"plain"`` or None (then ``$JAXLOGIT_CONV``, else ``"cpu"`` on the CPU
        backend and ``"plain"`` on any other).

    Raises:
      JaxlogitError: ``choice`` or ``$JAXLOGIT_CONV`` is neither.
    """
    source = "the conv argument" if choice is not None else f"${ENV_VAR}"
    choice = (os.environ.get(ENV_VAR) or None) if choice is None else choice
    if choice is None:
        return CPU if on_cpu() else PLAIN
    if choice not in CONV_PATHS:
        raise JaxlogitError(f"unknown convolution path {choice!r} in {source}: use {' or '.join(CONV_PATHS)}")
    return choice


def conv_layers(choice: str | None = None) -> tuple[type, object]:
    """``(conv module class, max_pool function)`` of :func:`conv_path` ``(choice)``.

    The class takes ``FastConv``'s fields and creates the same variables; the function is
    ``max_pool(x (B,H,W,C), kernel, stride, padding=0) -> (B,h,w,C)`` (torch's semantics).
    """
    from jaxlogit.models import _conv, _pool  # models import this module

    if conv_path(choice) == CPU:
        return _conv.FastConv, _pool.max_pool
    return _conv.PlainConv, _pool.select_and_scatter_max_pool


def deepfool_chunk(choice: str | None = None) -> int | None:
    """DeepFool's default samples per compacted chunk: 16 on the ``"cpu"`` path, None (the
    whole batch) on ``"plain"``."""
    return CPU_DEEPFOOL_CHUNK if conv_path(choice) == CPU else None
