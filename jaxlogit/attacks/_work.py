"""The work one attack call performs, in passes over the batch (what the bench counts)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Work(NamedTuple):
    """Passes over the batch one attack call performed.

    Attributes:
      forwards: forward passes (a forward shared by several backward passes counts once).
      gradients: input-gradient (backward) passes; the "gradient steps" of the report.
    """

    forwards: float
    gradients: float

    def flops(self, forward_flops: float, gradient_flops: float) -> float:
        """FLOPs of this work, from the FLOPs of one forward and of one forward+gradient."""
        return self.forwards * forward_flops + self.gradients * (gradient_flops - forward_flops)


def step_work(steps: int) -> Work:
    """An attack taking ``steps`` forward+gradient steps on the whole batch, then one forward
    re-predicting ``x_adv`` (PGD, MIM, C&W)."""
    return Work(forwards=steps + 1, gradients=steps)


def deepfool_work(iterations: np.ndarray, candidates: int, max_iter: int) -> Work:
    """DeepFool's work from each sample's steps ``iterations`` (B,), in passes over the batch.

    jaxlogit's DeepFool runs each iteration on the still-active samples only, so its work is
    counted per sample and averaged: it runs the clean forward and the final re-prediction, a
    sample that took ``t > 0`` steps took part in ``min(t + 1, max_iter)`` loop iterations (one
    forward each; a sample misclassified from the start, ``t = 0``, in none) and ``K - 1``
    backward passes (one per candidate class) per step. The padding of the last partial chunk
    of each iteration is not counted.
    """
    iterations = np.asarray(iterations, np.float64)
    loop_forwards = np.where(iterations > 0, np.minimum(iterations + 1, max_iter), 0.0)
    return Work(
        forwards=float(np.mean(loop_forwards)) + 2, gradients=float(np.mean(iterations)) * (candidates - 1)
    )
