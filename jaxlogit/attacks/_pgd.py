"""Projected gradient descent (Madry et al. 2018) under the L-inf norm, as one jitted program."""

from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogit import _xla
from jaxlogit.attacks import _checks, _losses, _norms, _result
from jaxlogit.attacks._compile import StaticFn, split_logits_fn
from jaxlogit.errors import JaxlogitError


def linf_pgd(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    x_start: jax.Array,
    eps: jax.Array,
    step_size: jax.Array,
    *,
    steps: int,
    loss: _losses.Loss,
    targeted: bool,
) -> jax.Array:
    """Runs ``steps`` signed-gradient ascent steps from ``x_start`` (traceable, not jitted).

    Each step: ``x_adv <- project(x_adv + step_size * sign(grad objective))`` onto the
    ``eps``-ball around ``x`` and [0, 1]. Building block for restarts and adaptive variants.

    Args:
      logits_fn: images (B, H, W, C) -> logits (B, C).
      x: (B, H, W, C) clean images.
      labels: (B,) true labels (targeted: target labels).
      x_start: (B, H, W, C) starting point inside the ball.
      eps, step_size: scalars.
      steps: number of steps.
      loss: ``(logits, labels) -> (B,)`` to maximise (minimised when ``targeted``).
      targeted: whether to move towards ``labels``.

    Returns:
      (B, H, W, C) adversarial images.
    """

    def step(_, x_adv):
        grad = _losses.input_gradient(logits_fn, x_adv, labels, loss, targeted)
        return _norms.linf_project(_norms.linf_sign_step(x_adv, grad, step_size), x, eps)

    return lax.fori_loop(0, steps, step, x_start)


@_xla.jit(static_argnames=("fn_static", "steps", "random_start", "loss", "targeted"))
def _program(fn_arrays, x, labels, key, eps, step_size, *, fn_static: StaticFn, steps: int,
             random_start: bool, loss: _losses.Loss, targeted: bool) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    x_start = _norms.linf_random_start(key, x, eps) if random_start else x
    x_adv = linf_pgd(logits_fn, x, labels, x_start, eps, step_size,
                     steps=steps, loss=loss, targeted=targeted)
    iterations = jnp.full(x.shape[:1], steps, jnp.int32)
    return _result.assemble(logits_fn, x, x_adv, labels, targeted=targeted, norm="linf",
                            iterations=iterations)


def pgd(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    key: Optional[jax.Array] = None,
    eps: float = 16 / 255,
    steps: int = 10,
    step_size: float = 2 / 255,
    random_start: bool = True,
    y_target: Optional[jax.Array] = None,
    loss: Union[str, _losses.Loss] = "ce",
) -> _result.AttackResult:
    """L-inf PGD: a random start in the ``eps``-ball, then ``steps`` projected sign steps.

    The whole attack is one compiled program (cached: a second call with the same shapes and
    static settings does not recompile; ``eps`` and ``step_size`` are traced, so changing
    them does not recompile either). Pass the weights bound with ``functools.partial`` so they
    are program inputs rather than constants (see ``jaxlogit.attacks._compile``).

    Args:
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C); owns any normalisation.
      x: (B, H, W, C) float images in [0, 1].
      y: (B,) int true labels.
      key: PRNG key for the random start (required when ``random_start``).
      eps: radius of the L-inf ball.
      steps: number of gradient steps T.
      step_size: L-inf size of each step.
      random_start: start from a uniform point of the ball (else from ``x``).
      y_target: (B,) int target labels for a targeted attack (minimises their loss).
      loss: ``"ce"`` (cross-entropy), ``"margin"`` (max other logit minus true logit) or a
        function ``(logits (B, C), labels (B,)) -> (B,)`` to maximise.

    Returns:
      ``AttackResult`` with L-inf norms and ``iterations == steps``.

    Examples:
      >>> res = pgd(logits_fn, x, y, key=jax.random.key(0))  # doctest: +SKIP
      >>> float(res.success.mean())  # doctest: +SKIP
    """
    x, y, labels, targeted = _checks.attack_inputs(x, y, y_target)
    _checks.positive("eps", eps)
    _checks.positive("step_size", step_size)
    steps = _checks.count("steps", steps)
    if random_start and key is None:
        raise JaxlogitError("pgd with random_start=True needs key=jax.random.key(seed)")
    fn_static, fn_arrays = split_logits_fn(logits_fn)
    res = _program(fn_arrays, x, labels, key if random_start else None,
                   jnp.float32(eps), jnp.float32(step_size), fn_static=fn_static, steps=steps,
                   random_start=bool(random_start), loss=_losses.resolve(loss), targeted=targeted)
    _checks.labels_fit(res.logits.shape[-1], y, labels, targeted)
    return res
