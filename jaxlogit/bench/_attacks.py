"""The benchmarked attacks with the paper's settings, and the work each call performed.

Work is counted in passes over the whole batch: ``forwards`` forward passes and ``gradients``
input-gradient (backward) passes. PGD, MIM and C&W take one forward and one backward per step.
jaxlogit's DeepFool runs each iteration on the still-active samples only, so its work is
counted per sample and averaged: one forward per iteration the sample takes part in (including
the one that finds it fooled) and ``K - 1`` backward passes (one per candidate class) per step
it takes.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import attacks

ATTACKS = ("pgd", "mim", "deepfool", "cw")
EPS = 16 / 255
STEPS = 10  # PGD and MIM
PGD_STEP_SIZE = EPS / 8
MIM_STEP_SIZE = EPS / STEPS
DEEPFOOL_CANDIDATES = 10
DEEPFOOL_MAX_ITER = 100
DEEPFOOL_OVERSHOOT = 0.02
CW_STEPS = 25
CW_SEARCH_STEPS = 4
CW_CONST = 10.0
CW_LR = 0.01


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


def jax_attack(name: str, logits_fn: Callable, x: np.ndarray, y: np.ndarray, *,
               seed: int = 0) -> Callable[[], attacks.AttackResult]:
    """A no-argument function running jaxlogit's ``name`` attack on ``(x, y)``.

    Settings: PGD-10 (eps 16/255, step eps/8, random start), MIM-10 (step eps/10, decay 1),
    DeepFool (10 candidates, 100 iterations, overshoot 0.02), C&W-L2 (4 search steps x 25 Adam
    steps, c = 10, kappa = 0, lr = 0.01).
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    key = jax.random.key(seed)
    calls = {
        "pgd": lambda: attacks.pgd(logits_fn, x, y, key=key, eps=EPS, steps=STEPS,
                                   step_size=PGD_STEP_SIZE),
        "mim": lambda: attacks.mim(logits_fn, x, y, eps=EPS, steps=STEPS,
                                   step_size=MIM_STEP_SIZE, decay=1.0),
        "deepfool": lambda: attacks.deepfool(logits_fn, x, y, candidates=DEEPFOOL_CANDIDATES,
                                             max_iter=DEEPFOOL_MAX_ITER,
                                             overshoot=DEEPFOOL_OVERSHOOT),
        "cw": lambda: attacks.cw_l2(logits_fn, x, y, steps=CW_STEPS,
                                    search_steps=CW_SEARCH_STEPS, initial_const=CW_CONST,
                                    confidence=0.0, lr=CW_LR),
    }
    return calls[name]


def jax_work(name: str, result: attacks.AttackResult, num_classes: int) -> Work:
    """The passes over the batch jaxlogit's ``name`` attack performed to produce ``result``.

    Every attack ends with one forward re-predicting ``x_adv``. DeepFool also runs the clean
    forward; a sample that took ``t > 0`` steps took part in ``min(t + 1, max_iter)`` loop
    iterations (a sample misclassified from the start, ``t = 0``, in none). The padding of the
    last partial chunk of each iteration is not counted.
    """
    if name in ("pgd", "mim"):
        return Work(forwards=STEPS + 1, gradients=STEPS)
    if name == "cw":
        steps = CW_STEPS * CW_SEARCH_STEPS
        return Work(forwards=steps + 1, gradients=steps)
    return deepfool_work(np.asarray(result.iterations), min(DEEPFOOL_CANDIDATES, num_classes))


def deepfool_work(iterations: np.ndarray, candidates: int, max_iter: int = DEEPFOOL_MAX_ITER) -> Work:
    """DeepFool's work from each sample's steps ``iterations`` (B,), in passes over the batch."""
    iterations = np.asarray(iterations, np.float64)
    loop_forwards = np.where(iterations > 0, np.minimum(iterations + 1, max_iter), 0.0)
    return Work(forwards=float(np.mean(loop_forwards)) + 2, gradients=float(np.mean(iterations)) * (candidates - 1))
