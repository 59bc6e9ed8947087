"""The geometry of an iterative attack: one ``Geometry`` per norm, one step shared by all loops.

A ``Geometry`` bundles a norm's four pieces (written once in ``_norms``); a ``StepRule`` turns
each gradient into the direction to step along (PGD: the gradient itself; MIM: a momentum of
L1-normalised gradients). ``ascent_step`` is the one update every iterative attack takes:
``x_adv <- project(step(x_adv, direction))``. Shapes: images ``(B, H, W, C)``, ``eps`` and
``step_size`` scalars, per-sample values ``(B,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlogit.attacks import _norms
from jaxlogit.errors import JaxlogitError


class Geometry(NamedTuple):
    """The pieces of one norm's eps-ball, all per sample on a batch.

    Attributes:
      name: ``"linf"`` or ``"l2"``.
      norm: ``delta (B, ...) -> (B,)``.
      random_start: ``(key, x (B, ...), eps) -> (B, ...)``, a uniform point of the ball around
        ``x`` clipped to [0, 1].
      step: ``(x_adv, direction, step_size) -> x_adv``, the steepest-ascent step of norm
        ``step_size`` along ``direction`` (all (B, ...)).
      project: ``(x_adv, x, eps) -> x_adv``, onto the ``eps``-ball around ``x``, then [0, 1].
    """

    name: str
    norm: Callable[[jax.Array], jax.Array]
    random_start: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    step: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    project: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


GEOMETRIES: dict[str, Geometry] = {
    "linf": Geometry(
        "linf", _norms.linf_norm, _norms.linf_random_start, _norms.linf_sign_step, _norms.linf_project
    ),
    "l2": Geometry("l2", _norms.l2_norm, _norms.l2_random_start, _norms.l2_step, _norms.l2_project),
}


def is_key_batch(key: jax.Array) -> bool:
    """Whether ``key`` is a batch of keys (B,), one per sample, rather than one key for the batch.

    A typed key (``jax.random.key``) is one key of shape ``()``; a raw ``uint32`` key
    (``jax.random.PRNGKey``) is one key of shape ``(2,)``.
    """
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    return key.ndim == (1 if typed else 2)


def sample_starts(geometry: Geometry, key: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """``geometry.random_start`` of a batch ``x`` (B, H, W, C) from one key or from (B,) keys.

    With one key the noise of the whole batch is drawn at once (a sample's start depends on
    the batch it is in); with (B,) keys each sample draws its own as if it were alone (a batch
    of one), so its start depends only on its key.
    """
    if not is_key_batch(key):
        return geometry.random_start(key, x, eps)
    return jax.vmap(lambda k, image: geometry.random_start(k, image[None], eps)[0])(key, x)


def resolve(norm: str) -> str:
    """Checks a ``norm`` setting: a key of ``GEOMETRIES``."""
    if not isinstance(norm, str) or norm not in GEOMETRIES:
        raise JaxlogitError(f"norm={norm!r} is unknown: pass one of {sorted(GEOMETRIES)}")
    return norm


class StepRule(NamedTuple):
    """How an iterative attack turns gradients into step directions (optax-style pair).

    Attributes:
      init: ``x_start (B, ...) -> state``.
      update: ``(grad (B, ...), state) -> (direction (B, ...), state)``.
    """

    init: Callable[[jax.Array], Any]
    update: Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def gradient_rule() -> StepRule:
    """PGD's rule: step along the gradient itself, no state."""
    return StepRule(init=lambda x_start: (), update=lambda grad, state: (grad, state))


def momentum_rule(decay: jax.Array) -> StepRule:
    """MIM's rule: ``m <- decay * m + grad / ||grad||_1`` per sample (``m`` starts at 0); step along ``m``."""

    def update(grad: jax.Array, momentum: jax.Array) -> tuple[jax.Array, jax.Array]:
        momentum = decay * momentum + _norms.l1_normalise(grad)
        return momentum, momentum

    return StepRule(init=jnp.zeros_like, update=update)


def ascent_step(
    geometry: Geometry,
    rule: StepRule,
    x_adv: jax.Array,
    grad: jax.Array,
    state: Any,
    *,
    x: jax.Array,
    eps: jax.Array,
    step_size: jax.Array,
) -> tuple[jax.Array, Any]:
    """One iterative-attack update: the rule's direction, a ``geometry`` step, the projection.

    Args:
      geometry: the norm's pieces.
      rule: gradient -> direction.
      x_adv: (B, H, W, C) current iterate.
      grad: (B, H, W, C) gradient of each sample's objective at ``x_adv``.
      state: the rule's state.
      x: (B, H, W, C) clean images, the centre of the ball.
      eps, step_size: ball radius and step norm.

    Returns:
      ``(x_next (B, H, W, C), state)``.
    """
    direction, state = rule.update(grad, state)
    return geometry.project(geometry.step(x_adv, direction, step_size), x, eps), state
