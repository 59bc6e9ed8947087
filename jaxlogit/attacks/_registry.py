"""One table of the attacks: the pipeline, the CLI and the bench all read it.

An :class:`AttackSpec` holds what jaxlogit needs to know about an attack besides its algorithm:
its norm, whether it takes an ``eps`` budget, the paper's settings, how to run it, the bench's
work model and its torchattacks counterpart. ``register(spec)`` adds one (the paper's four are
registered in ``_builtin``); ``get(name)`` is the only way consumers find one, so an unknown
name is the same one-line error everywhere.

Example:
    >>> from jaxlogit import attacks
    >>> attacks.names()
    ('pgd', 'mim', 'deepfool', 'cw')
    >>> attacks.get("pgd").label(16 / 255), attacks.get("cw").norm_label
    ('pgd@16/255', 'L2')
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import jax

from jaxlogit.attacks._result import AttackResult
from jaxlogit.attacks._work import Work
from jaxlogit.errors import JaxlogitError

NORM_LABELS = {"linf": "Linf", "l2": "L2"}


class Runner(Protocol):
    """``run(logits_fn, x, y, *, key, eps, steps) -> AttackResult`` with the paper's settings.

    ``logits_fn``, ``x`` (B, H, W, C) in [0, 1] and ``y`` (B,) as every attack takes them;
    ``key`` one PRNG key or (B,) keys, one per image (the pipeline passes ``fold_in(key(seed), i)``
    for image i of the split; used by random attacks only); ``eps`` the budget (used only when the
    spec ``takes_eps``); ``steps`` None for the paper's iteration count, else its override
    (an attack without one ignores it). Must be traceable: the pipeline calls it under jit.
    A runner may take more keyword settings (``AttackSpec.tunable``, e.g. C&W's ``lr``); the
    pipeline passes one only when a config overrides it.
    """

    def __call__(
        self,
        logits_fn: Callable,
        x: jax.Array,
        y: jax.Array,
        *,
        key: jax.Array,
        eps: float,
        steps: int | None,
    ) -> AttackResult: ...


class TorchCounterpart(NamedTuple):
    """torchattacks' version of an attack, which the bench times on the same weights.

    Attributes:
      build: ``build(torch_model, *, eps) -> torchattacks.Attack`` with the same settings
        (imports torchattacks itself: it is optional).
      per_step: its work differs from ours (e.g. no binary search), so speed-ups compare the
        time per gradient step instead of per image.
      per_image_loop: it loops over the images in Python, so the bench times it on a few
        images (``BenchConfig.torch_deepfool_images``) and extrapolates.
    """

    build: Callable[..., Any]
    per_step: bool = False
    per_image_loop: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class AttackSpec:
    """Everything about one attack except its algorithm.

    Attributes:
      name: the name the CLI, configs and caches use (``--attack NAME``).
      norm: ``"linf"`` or ``"l2"``: the norm of its budget and of ``AttackResult.norm``.
      takes_eps: whether ``eps`` is its budget (else it ignores ``eps``).
      settings: the settings ``run``, ``work`` and the torch counterpart use (for the paper's
        attacks, the paper's: SPEC.md), read-only; for reports and documentation.
      run: the :class:`Runner` the pipeline and the bench call.
      work: ``work(result, num_classes) -> Work``: passes over the batch a call with the
        paper's settings performed (the bench's FLOP count); None: the bench refuses it.
      torch: its :class:`TorchCounterpart`, None if torchattacks has none.
      tunable: keyword settings besides ``steps`` that ``run`` also takes and a
        ``pipeline.AttackConfig`` may override (C&W: ``("lr",)``); passed only when overridden.
    """

    name: str
    norm: str
    takes_eps: bool
    settings: Mapping[str, Any]
    run: Runner
    work: Callable[[AttackResult, int], Work] | None = None
    torch: TorchCounterpart | None = None
    tunable: tuple[str, ...] = ()

    def __post_init__(self):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(self.name)):
            raise JaxlogitError(
                f"attack name {self.name!r}: use lowercase letters, digits and _ "
                "(it is a CLI choice and part of cache folder names)"
            )
        if self.norm not in NORM_LABELS:
            raise JaxlogitError(
                f"attack {self.name!r} has norm {self.norm!r}: use one of {', '.join(NORM_LABELS)}"
            )
        object.__setattr__(self, "settings", types.MappingProxyType(dict(self.settings)))

    @property
    def norm_label(self) -> str:
        """``Linf`` or ``L2``, for printed reports."""
        return NORM_LABELS[self.norm]

    def label(self, eps: float) -> str:
        """Short name for tables: ``pgd@16/255`` for an attack with a budget, else ``cw``."""
        if self.takes_eps:
            return f"{self.name}@{round(eps * 255, 2):g}/255"
        return self.name


_SPECS: dict[str, AttackSpec] = {}


def register(spec: AttackSpec) -> AttackSpec:
    """Adds ``spec`` under ``spec.name``; a name already registered is an error."""
    if spec.name in _SPECS:
        raise JaxlogitError(
            f"attack {spec.name!r} is already registered: choose another name "
            f"(registered: {', '.join(_SPECS)})"
        )
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> AttackSpec:
    """Removes and returns the attack ``name`` (an unknown name is an error)."""
    spec = get(name)
    del _SPECS[name]
    return spec


def get(name: str) -> AttackSpec:
    """The attack registered as ``name``; an unknown name is a one-line error listing them."""
    spec = _SPECS.get(name)
    if spec is None:
        raise JaxlogitError(f"unknown attack {name!r}: choose one of {', '.join(_SPECS)}")
    return spec


def names() -> tuple[str, ...]:
    """The registered attacks' names, in registration order."""
    return tuple(_SPECS)
