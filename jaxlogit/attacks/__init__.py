"""Adversarial attacks as compiled JAX programs.

Every attack is ``attack(logits_fn, x, y, *, ...) -> AttackResult``: ``logits_fn`` maps NHWC
float32 images in [0, 1] to logits (B, C) (normalisation, eval-mode BatchNorm and the like
belong inside it), ``x`` is (B, H, W, C) in [0, 1] and ``y`` (B,) int labels. The whole loop of
each attack is one ``jax.jit`` program, cached on ``logits_fn`` and the static settings; bind
model weights with ``functools.partial(apply, variables)`` so they are traced inputs and a
new partial with same-shaped weights reuses the compiled program.

The attacks the pipeline, the CLI and the bench know are the ones registered by name
(``register(AttackSpec(...))``, ``get(name)``, ``names()``; see ``_registry``).
"""

from jaxlogit.attacks._adaptive import (
    Judged,
    LossObjective,
    Tracked,
    linf_advance,
    linf_random_starts,
    loss_objective,
    pgd_restarts,
    sample_keys,
    track_init,
)
from jaxlogit.attacks._builtin import register_builtin
from jaxlogit.attacks._cw import cw_l2
from jaxlogit.attacks._deepfool import deepfool
from jaxlogit.attacks._losses import LOSSES, cross_entropy, margin
from jaxlogit.attacks._mim import mim
from jaxlogit.attacks._pgd import pgd
from jaxlogit.attacks._registry import AttackSpec, Runner, TorchCounterpart, get, names, register, unregister
from jaxlogit.attacks._result import AttackResult
from jaxlogit.attacks._work import Work

register_builtin()

__all__ = [
    # the attacks and their registry
    "AttackResult",
    "AttackSpec",
    "LOSSES",
    "Runner",
    "TorchCounterpart",
    "Work",
    "cross_entropy",
    "cw_l2",
    "deepfool",
    "get",
    "margin",
    "mim",
    "names",
    "pgd",
    "register",
    "unregister",
    # building blocks of jaxlogit.adaptive
    "Judged",
    "LossObjective",
    "Tracked",
    "linf_advance",
    "linf_random_starts",
    "loss_objective",
    "pgd_restarts",
    "sample_keys",
    "track_init",
]
