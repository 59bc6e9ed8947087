"""The benchmarked attacks, as registered (``jaxlogit.attacks``), and the work each call performed.

Work is counted in passes over the whole batch: ``forwards`` forward passes and ``gradients``
input-gradient (backward) passes, by each attack's work model (``AttackSpec.work``). PGD, MIM
and C&W take one forward and one backward per step. jaxlogit's DeepFool runs each iteration on
the still-active samples only, so its work is counted per sample and averaged: one forward per
iteration the sample takes part in (including the one that finds it fooled) and ``K - 1``
backward passes (one per candidate class) per step it takes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import attacks
from jaxlogit.attacks._work import Work, deepfool_work
from jaxlogit.errors import JaxlogitError

EPS = 16 / 255  # the budget of the attacks that take one

__all__ = ["EPS", "Work", "bench_spec", "deepfool_work", "jax_attack", "jax_work"]


def bench_spec(name: str) -> attacks.AttackSpec:
    """The registered attack ``name``, which must have a work model to be benchmarked."""
    spec = attacks.get(name)
    if spec.work is None:
        raise JaxlogitError(
            f"attack {name!r} has no work model, so its FLOPs cannot be counted: "
            "register it with AttackSpec(..., work=...)"
        )
    return spec


def jax_attack(
    name: str, logits_fn: Callable, x: np.ndarray, y: np.ndarray, *, seed: int = 0
) -> Callable[[], attacks.AttackResult]:
    """A no-argument function running jaxlogit's ``name`` attack on ``(x, y)`` with its registered
    settings and budget ``EPS``.

    The paper's: PGD-10 (eps 16/255, step eps/8, random start), MIM-10 (step eps/10, decay 1),
    DeepFool (10 candidates, 100 iterations, overshoot 0.02), C&W-L2 (4 search steps x 25 Adam
    steps, c = 10, kappa = 0, lr = 0.01).
    """
    spec = bench_spec(name)
    x, y = jnp.asarray(x), jnp.asarray(y)
    key = jax.random.key(seed)
    return lambda: spec.run(logits_fn, x, y, key=key, eps=EPS, steps=None)


def jax_work(name: str, result: attacks.AttackResult, num_classes: int) -> Work:
    """The passes over the batch jaxlogit's ``name`` attack performed to produce ``result``.

    Every attack ends with one forward re-predicting ``x_adv``. DeepFool also runs the clean
    forward; a sample that took ``t > 0`` steps took part in ``min(t + 1, max_iter)`` loop
    iterations (a sample misclassified from the start, ``t = 0``, in none). The padding of the
    last partial chunk of each iteration is not counted.
    """
    return bench_spec(name).work(result, num_classes)
