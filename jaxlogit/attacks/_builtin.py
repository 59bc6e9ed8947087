"""The paper's four attacks with its settings (SPEC.md), registered as pgd, mim, deepfool, cw.

``jaxlogit.attacks`` calls :func:`register_builtin` on import. To add an attack to the library,
write its algorithm in a file of its own and add one ``register(...)`` entry to
:func:`register_builtin` (see docs/ARCHITECTURE.md, "Adding an attack").
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit.attacks._cw import cw_l2
from jaxlogit.attacks._deepfool import deepfool
from jaxlogit.attacks._mim import mim
from jaxlogit.attacks._pgd import pgd
from jaxlogit.attacks._registry import AttackSpec, TorchCounterpart, register
from jaxlogit.attacks._work import deepfool_work, step_work

# PGD-10, step eps/8, random start; MIM-10, step eps/10 (eps/steps), decay 1.
PGD = types.MappingProxyType({"steps": 10, "step_divisor": 8, "random_start": True})
MIM = types.MappingProxyType({"steps": 10, "decay": 1.0})
# DeepFool: the 10 top classes as candidates (fewer if C < 10), 100 iterations, overshoot 0.02.
DEEPFOOL = types.MappingProxyType({"candidates": 10, "max_iter": 100, "overshoot": 0.02})
# C&W-L2: 4 binary-search steps x 25 Adam steps, c = 10, kappa = 0, lr 0.01.
CW = types.MappingProxyType(
    {"steps": 25, "search_steps": 4, "initial_const": 10.0, "confidence": 0.0, "lr": 0.01}
)


def _steps(steps: int | None, settings: Mapping) -> int:
    return settings["steps"] if steps is None else steps


def _num_classes(logits_fn, x) -> int:
    return int(jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, jnp.float32)).shape[-1])


def run_pgd(logits_fn, x, y, *, key, eps, steps):
    """PGD with the paper's settings (:class:`jaxlogit.attacks.Runner`)."""
    return pgd(
        logits_fn,
        x,
        y,
        key=key,
        eps=eps,
        steps=_steps(steps, PGD),
        step_size=eps / PGD["step_divisor"],
        random_start=PGD["random_start"],
    )


def run_mim(logits_fn, x, y, *, key, eps, steps):
    """MIM with the paper's settings; its step is ``eps / steps`` (``key`` unused)."""
    return mim(logits_fn, x, y, eps=eps, steps=_steps(steps, MIM), decay=MIM["decay"])


def run_deepfool(logits_fn, x, y, *, key, eps, steps):
    """DeepFool with the paper's settings (``key``, ``eps`` and ``steps`` unused)."""
    return deepfool(
        logits_fn,
        x,
        y,
        candidates=min(DEEPFOOL["candidates"], _num_classes(logits_fn, x)),
        max_iter=DEEPFOOL["max_iter"],
        overshoot=DEEPFOOL["overshoot"],
    )


def run_cw(logits_fn, x, y, *, key, eps, steps, lr=None):
    """C&W-L2 with the paper's settings; ``steps`` are Adam steps per search step, ``lr`` Adam's
    learning rate (None: the paper's 0.01)."""
    return cw_l2(
        logits_fn,
        x,
        y,
        steps=_steps(steps, CW),
        search_steps=CW["search_steps"],
        initial_const=CW["initial_const"],
        confidence=CW["confidence"],
        lr=CW["lr"] if lr is None else lr,
    )


def deepfool_call_work(result, num_classes: int):
    """DeepFool's work, from the steps each sample took (``_work.deepfool_work``)."""
    return deepfool_work(
        np.asarray(result.iterations), min(DEEPFOOL["candidates"], num_classes), DEEPFOOL["max_iter"]
    )


def torch_pgd(model, *, eps):
    """torchattacks.PGD with the same settings."""
    import torchattacks

    return torchattacks.PGD(
        model, eps=eps, alpha=eps / PGD["step_divisor"], steps=PGD["steps"], random_start=PGD["random_start"]
    )


def torch_mim(model, *, eps):
    """torchattacks.MIFGSM with the same settings (step eps/steps)."""
    import torchattacks

    return torchattacks.MIFGSM(
        model, eps=eps, alpha=eps / MIM["steps"], steps=MIM["steps"], decay=MIM["decay"]
    )


def torch_deepfool(model, *, eps):
    """torchattacks.DeepFool: it loops over the images in Python and takes the gradient of
    every class at every iteration."""
    import torchattacks

    return torchattacks.DeepFool(model, steps=DEEPFOOL["max_iter"], overshoot=DEEPFOOL["overshoot"])


def torch_cw(model, *, eps):
    """torchattacks.CW: no binary search on c (one constant, ``steps`` Adam steps, and it stops
    early when the loss stops falling), so the bench compares it per step."""
    import torchattacks

    return torchattacks.CW(
        model, c=CW["initial_const"], kappa=CW["confidence"], steps=CW["steps"], lr=CW["lr"]
    )


def register_builtin() -> None:
    """Registers the paper's four attacks, in the paper's order (``jaxlogit.attacks`` does on import)."""
    register(
        AttackSpec(
            "pgd",
            "linf",
            True,
            PGD,
            run_pgd,
            work=lambda result, c: step_work(PGD["steps"]),
            torch=TorchCounterpart(torch_pgd),
        )
    )
    register(
        AttackSpec(
            "mim",
            "linf",
            True,
            MIM,
            run_mim,
            work=lambda result, c: step_work(MIM["steps"]),
            torch=TorchCounterpart(torch_mim),
        )
    )
    register(
        AttackSpec(
            "deepfool",
            "l2",
            False,
            DEEPFOOL,
            run_deepfool,
            work=deepfool_call_work,
            torch=TorchCounterpart(torch_deepfool, per_image_loop=True),
        )
    )
    register(
        AttackSpec(
            "cw",
            "l2",
            False,
            CW,
            run_cw,
            work=lambda result, c: step_work(CW["steps"] * CW["search_steps"]),
            torch=TorchCounterpart(torch_cw, per_step=True),
            tunable=("lr",),
        )
    )
