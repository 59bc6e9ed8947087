"""Momentum iterative method (MI-FGSM, Dong et al. 2018) under the L-inf norm."""

from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogit import _xla
from jaxlogit.attacks import _checks, _losses, _norms, _result
from jaxlogit.attacks._compile import StaticFn, split_logits_fn


def linf_mim(
    logits_fn: Callable,
    x: jax.Array,
    labels: jax.Array,
    eps: jax.Array,
    step_size: jax.Array,
    decay: jax.Array,
    *,
    steps: int,
    loss: _losses.Loss,
    targeted: bool,
) -> jax.Array:
    """Runs ``steps`` momentum steps from ``x`` (traceable, not jitted).

    ``g <- decay * g + grad / ||grad||_1`` (per sample), then
    ``x_adv <- project(x_adv + step_size * sign(g))`` onto the ``eps``-ball and [0, 1].

    Args:
      logits_fn: images (B, H, W, C) -> logits (B, C).
      x: (B, H, W, C) clean images (also the start: MIM has no random start).
      labels: (B,) true labels (targeted: target labels).
      eps, step_size, decay: scalars.
      steps: number of steps.
      loss: ``(logits, labels) -> (B,)`` to maximise (minimised when ``targeted``).
      targeted: whether to move towards ``labels``.

    Returns:
      (B, H, W, C) adversarial images.
    """

    def step(_, carry):
        x_adv, momentum = carry
        grad = _losses.input_gradient(logits_fn, x_adv, labels, loss, targeted)
        momentum = decay * momentum + _norms.l1_normalise(grad)
        x_adv = _norms.linf_project(_norms.linf_sign_step(x_adv, momentum, step_size), x, eps)
        return x_adv, momentum

    x_adv, _ = lax.fori_loop(0, steps, step, (x, jnp.zeros_like(x)))
    return x_adv


@_xla.jit(static_argnames=("fn_static", "steps", "loss", "targeted"))
def _program(fn_arrays, x, labels, eps, step_size, decay, *, fn_static: StaticFn, steps: int,
             loss: _losses.Loss, targeted: bool) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    x_adv = linf_mim(logits_fn, x, labels, eps, step_size, decay,
                     steps=steps, loss=loss, targeted=targeted)
    iterations = jnp.full(x.shape[:1], steps, jnp.int32)
    return _result.assemble(logits_fn, x, x_adv, labels, targeted=targeted, norm="linf",
                            iterations=iterations)


def mim(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: float = 16 / 255,
    steps: int = 10,
    step_size: Optional[float] = None,
    decay: float = 1.0,
    y_target: Optional[jax.Array] = None,
    loss: Union[str, _losses.Loss] = "ce",
) -> _result.AttackResult:
    """L-inf MIM: ``steps`` sign steps along an L1-normalised gradient momentum, no random start.

    Matches ``torchattacks.MIFGSM``, which divides each gradient by its *mean* absolute value:
    that is ``n_pixels`` times our L1 normalisation at every step, so both momenta differ by
    that constant factor and their signs (hence the steps) are the same. A sample whose
    gradient is exactly zero gets a zero step here (torchattacks divides by zero).

    Args:
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C); owns any normalisation.
      x: (B, H, W, C) float images in [0, 1].
      y: (B,) int true labels.
      eps: radius of the L-inf ball.
      steps: number of steps T.
      step_size: L-inf size of each step; ``None`` means ``eps / steps``.
      decay: momentum decay mu.
      y_target: (B,) int target labels for a targeted attack.
      loss: ``"ce"``, ``"margin"`` or a function ``(logits, labels) -> (B,)`` to maximise.

    Returns:
      ``AttackResult`` with L-inf norms and ``iterations == steps``.
    """
    x, y, labels, targeted = _checks.attack_inputs(x, y, y_target)
    _checks.positive("eps", eps)
    steps = _checks.count("steps", steps)
    step_size = eps / steps if step_size is None else _checks.positive("step_size", step_size)
    _checks.non_negative("decay", decay)
    fn_static, fn_arrays = split_logits_fn(logits_fn)
    res = _program(fn_arrays, x, labels, jnp.float32(eps), jnp.float32(step_size),
                   jnp.float32(decay), fn_static=fn_static, steps=steps,
                   loss=_losses.resolve(loss), targeted=targeted)
    _checks.labels_fit(res.logits.shape[-1], y, labels, targeted)
    return res
