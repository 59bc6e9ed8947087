"""Adaptive evaluation of a corrector: every attack on g∘f, collected per sample."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from jaxlogit import _xla, batching
from jaxlogit._weights import StaticFn, split_fn
from jaxlogit.adaptive import _objectives
from jaxlogit.adaptive._run import AdaptiveConfig, run_objective
from jaxlogit.errors import JaxlogitError

ADAPTIVE_ATTACKS = ("pgd_ce", "pgd_margin", "logit_matching")
OBLIVIOUS = "oblivious"


class Candidate(NamedTuple):
    """One attack's adversarial example per sample, seen by the backbone and the defended model.

    Attributes:
      backbone_logits: (N, C) ``f(x_adv)``.
      corrected_logits: (N, C) ``g(f(x_adv))``.
      first_success: (N,) int, gradient steps spent when ``g∘f`` was first fooled, -1 never
        (an oblivious example counts as found at 0 steps).
    """

    backbone_logits: np.ndarray
    corrected_logits: np.ndarray
    first_success: np.ndarray


class Evaluation(NamedTuple):
    """Everything the reports need about one corrector on N images.

    Attributes:
      labels: (N,) true labels.
      clean: the clean images as a ``Candidate`` (``first_success`` -1 everywhere).
      attacks: name -> ``Candidate``; ``"oblivious"`` (the backbone-only attack) first if given,
        then the adaptive attacks in ``ADAPTIVE_ATTACKS`` order.
      budget: gradient steps an adaptive attack may spend on one sample (restarts x steps).
    """

    labels: np.ndarray
    clean: Candidate
    attacks: dict
    budget: int


@_xla.jit(static_argnames=("fn_static",))
def _apply(fn_arrays: tuple, x: jax.Array, *, fn_static: StaticFn) -> jax.Array:
    return fn_static.bind(fn_arrays)(x)


def _map(fn: Callable, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` over ``x`` in fixed-size batches; a partial's weights stay traced (no recompiles)."""
    fn_static, fn_arrays = split_fn(fn)
    jitted = functools.partial(_apply, fn_arrays, fn_static=fn_static)
    return batching.map_batches(jitted, np.asarray(x, np.float32), batch_size=batch_size)


def _num_classes(f: Callable, x: np.ndarray) -> int:
    return int(jax.eval_shape(f, jax.ShapeDtypeStruct((1, *x.shape[1:]), np.float32)).shape[-1])


def adaptive_attack(
    name: str,
    f: Callable,
    g: Callable,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: AdaptiveConfig,
    clean_logits: np.ndarray,
    ids: np.ndarray | None = None,
) -> Candidate:
    """Runs one adaptive attack on ``g∘f``.

    Args:
      name: ``pgd_ce`` (cross-entropy of g∘f), ``pgd_margin`` (C&W margin of g∘f) or
        ``logit_matching`` (pull ``f(x')`` to the clean logits of the nearest image of another
        class among ``clean_logits``).
      f: backbone, images (N, H, W, C) in [0, 1] -> logits (N, C).
      g: eval-mode corrector, logits -> corrected logits (``adaptive.corrector_fn``).
      x, y: (N, H, W, C) clean images, (N,) labels.
      config: eps, steps, restarts, ...
      clean_logits: (N, C) ``f(x)`` (the pool of logit-matching targets).
      ids: (N,) random-stream ids (see ``run_objective``).
    """
    y = np.asarray(y, np.int32)
    if name == "logit_matching":
        targets = _objectives.matching_targets(clean_logits, y)
        objective, side = _objectives.logit_matching(f, g), (y, np.asarray(clean_logits, np.float32)[targets])
    elif name in ("pgd_ce", "pgd_margin"):
        objective, side = _objectives.loss_on_defended(f, g, name.split("_")[1]), y
    else:
        raise JaxlogitError(f"unknown adaptive attack {name!r}: choose one of {', '.join(ADAPTIVE_ATTACKS)}")
    tracked = run_objective(objective, x, side, config=config, ids=ids, num_classes=_num_classes(f, x))
    backbone = _map(f, tracked.x_adv, config.batch_size)
    return Candidate(backbone, np.asarray(tracked.logits), np.asarray(tracked.first_success))


def evaluate(
    f: Callable,
    g: Callable,
    x: np.ndarray,
    y: np.ndarray,
    *,
    config: AdaptiveConfig,
    oblivious_logits: np.ndarray | None = None,
    names: tuple[str, ...] = ADAPTIVE_ATTACKS,
    ids: np.ndarray | None = None,
) -> Evaluation:
    """Attacks the defended model ``g∘f`` with each adaptive attack and collects the results.

    Args:
      f: backbone, images (N, H, W, C) in [0, 1] -> logits (N, C).
      g: eval-mode corrector (``adaptive.corrector_fn(module, params)``).
      x: (N, H, W, C) clean images in [0, 1].
      y: (N,) int labels.
      config: the adaptive attacks' settings.
      oblivious_logits: (N, C) backbone logits of the backbone-only (oblivious) adversarial
        examples, if any; they join the worst case.
      names: which of ``ADAPTIVE_ATTACKS`` to run.
      ids: (N,) random-stream ids, e.g. dataset indices.

    Returns:
      ``Evaluation`` (numpy arrays).
    """
    y = np.asarray(y, np.int32)

    def correct(z):
        return _map(g, z, 1024)

    clean_logits = _map(f, x, config.batch_size)
    never = np.full(len(y), -1, np.int32)
    clean = Candidate(clean_logits, correct(clean_logits), never)
    found = {}
    if oblivious_logits is not None:
        corrected = correct(oblivious_logits)
        first = np.where(np.argmax(corrected, -1) != y, 0, -1).astype(np.int32)
        found[OBLIVIOUS] = Candidate(np.asarray(oblivious_logits, np.float32), corrected, first)
    for name in names:
        found[name] = adaptive_attack(name, f, g, x, y, config=config, clean_logits=clean_logits, ids=ids)
    return Evaluation(y, clean, found, config.budget)
