"""Running an L-inf objective on many images with restarts, dropping samples once they are fooled.

The attack of a sample stops at its first success (it keeps that example), so after every chunk
of steps the fooled samples leave the batch and the survivors are re-batched. Each sample draws
its random starts from its own key, so its result does not depend on which others share its batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxlogit import attacks, batching
from jaxlogit.errors import JaxlogitError


@dataclasses.dataclass(frozen=True)
class AdaptiveConfig:
    """Settings of the adaptive L-inf attacks.

    Attributes:
      eps: L-inf radius (the paper's 16/255).
      steps: sign steps per restart.
      restarts: random restarts (each from a uniform point of the ball).
      step_size: size of each sign step; None means ``eps / 8`` (2/255 at 16/255, as the paper's PGD).
      chunk: steps between two removals of fooled samples (speed only; results do not depend on it).
      batch_size: images per compiled call; 8x smaller batches carry the survivors that do not fill one.
      seed: root of every random start.
    """

    eps: float = 16 / 255
    steps: int = 100
    restarts: int = 3
    step_size: float | None = None
    chunk: int = 10
    batch_size: int = 200
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "restarts", "chunk", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise JaxlogitError(f"{name}={getattr(self, name)}: pass an integer >= 1")
        if not self.eps > 0:
            raise JaxlogitError(f"eps={self.eps}: pass a radius > 0")
        if self.step_size is not None and not self.step_size > 0:
            raise JaxlogitError(f"step_size={self.step_size}: pass a step > 0, or None for eps / 8")

    @property
    def step(self) -> float:
        """The sign-step size actually used."""
        return self.eps / 8 if self.step_size is None else self.step_size

    @property
    def budget(self) -> int:
        """Gradient steps spent on a sample that is never fooled: ``restarts * steps``."""
        return self.restarts * self.steps


def _batches(active: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Splits ``active`` into full batches and a remainder cut into 8x smaller batches."""
    small = max(1, batch_size // 8)
    full = active.size - active.size % batch_size
    if active.size - full > batch_size - small:  # almost full: one padded big batch
        full = active.size
    big = [active[i : i + batch_size] for i in range(0, full, batch_size)]
    return big + [active[i : i + small] for i in range(full, active.size, small)]


def _take(tree: Any, idx: np.ndarray, size: int) -> Any:
    return jax.tree.map(lambda a: batching.pad_to(np.asarray(a)[idx], size), tree)


def _put(tree: Any, idx: np.ndarray, values: Any) -> None:
    def put(target, value):
        target[idx] = np.asarray(value)[: len(idx)]

    jax.tree.map(put, tree, values)


def _host_tracked(x: np.ndarray, num_classes: int) -> attacks.Tracked:
    return attacks.Tracked(*(np.array(a) for a in attacks.track_init(x, num_classes)))


def run_objective(
    objective: Callable,
    x: np.ndarray,
    side: Any,
    *,
    config: AdaptiveConfig,
    ids: np.ndarray | None = None,
    num_classes: int,
) -> attacks.Tracked:
    """Attacks every image with ``config.restarts`` x ``config.steps`` L-inf steps on ``objective``.

    Args:
      objective: ``(x_adv, side) -> attacks.Judged`` (see ``jaxlogit.adaptive.objectives``).
      x: (N, H, W, C) clean images in [0, 1].
      side: pytree of per-sample arrays with leading dimension N (labels, targets, ...).
      config: eps, steps, restarts, ...
      ids: (N,) ints naming each image's random stream (default ``arange(N)``); pass dataset
        indices to make a sample's result independent of the set it is evaluated with.
      num_classes: C, the width of the objective's logits.

    Returns:
      ``attacks.Tracked`` as numpy arrays, (N, ...): each sample's first successful iterate
      (else its highest-value one) and the gradient steps spent when it first succeeded.
    """
    x = np.asarray(x, np.float32)
    ids = np.arange(len(x)) if ids is None else np.asarray(ids)
    keys = attacks.sample_keys(jax.random.key(config.seed), ids)
    tracked = _host_tracked(x, num_classes)
    for restart in range(config.restarts):
        active = np.flatnonzero(~tracked.success)
        if not active.size:
            break
        restart_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, restart)
        current = np.zeros_like(x)
        current[active] = np.asarray(attacks.linf_random_starts(restart_keys[active], x[active], config.eps))
        for done in range(0, config.steps, config.chunk):
            steps = min(config.chunk, config.steps - done)
            _chunk(objective, x, side, current, tracked, active, config, steps, restart * config.steps + done)
            active = active[~tracked.success[active]]
            if not active.size:
                break
    return tracked


def _chunk(objective, x, side, current, tracked, active, config, steps, steps_spent) -> None:
    """Advances the ``active`` samples by ``steps`` steps, in place on the host arrays."""
    small = max(1, config.batch_size // 8)
    for idx in _batches(active, config.batch_size):
        size = config.batch_size if idx.size > small else small
        last, new = attacks.linf_advance(
            objective,
            _take(x, idx, size),
            _take(side, idx, size),
            _take(current, idx, size),
            _take(tracked, idx, size),
            eps=config.eps,
            step_size=config.step,
            steps=steps,
            steps_spent=steps_spent,
        )
        _put(current, idx, last)
        _put(tracked, idx, new)
