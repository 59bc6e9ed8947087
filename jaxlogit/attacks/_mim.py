"""Momentum iterative method (MI-FGSM, Dong et al. 2018): PGD's loop with a momentum step rule."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlogit import _xla
from jaxlogit.attacks import _checks, _geometry, _losses, _pgd, _result
from jaxlogit.attacks._compile import StaticFn, split_logits_fn


@_xla.jit(static_argnames=("fn_static", "steps", "loss", "targeted", "norm"))
def _program(
    fn_arrays,
    x,
    labels,
    eps,
    step_size,
    decay,
    *,
    fn_static: StaticFn,
    steps: int,
    loss: _losses.Loss,
    targeted: bool,
    norm: str,
) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    x_adv = _pgd.ascend(
        logits_fn,
        x,
        labels,
        x,
        eps,
        step_size,
        steps=steps,
        loss=loss,
        targeted=targeted,
        geometry=_geometry.GEOMETRIES[norm],
        rule=_geometry.momentum_rule(decay),
    )
    iterations = jnp.full(x.shape[:1], steps, jnp.int32)
    return _result.assemble(logits_fn, x, x_adv, labels, targeted=targeted, norm=norm, iterations=iterations)


def mim(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    eps: float = 16 / 255,
    steps: int = 10,
    step_size: float | None = None,
    decay: float = 1.0,
    y_target: jax.Array | None = None,
    loss: str | _losses.Loss = "ce",
    norm: str = "linf",
) -> _result.AttackResult:
    """MIM: ``steps`` steps along an L1-normalised gradient momentum, no random start.

    From ``x``, per sample: ``m <- decay * m + grad / ||grad||_1`` (``m`` starts at 0), then
    ``x_adv <- project(x_adv + step_size * sign(m))`` (``norm="l2"``: ``m / ||m||_2``) onto
    the ``eps``-ball and [0, 1]. As for ``pgd``, the default ``eps`` is an L-inf size.

    Matches ``torchattacks.MIFGSM``, which divides each gradient by its *mean* absolute value:
    that is ``n_pixels`` times our L1 normalisation at every step, so both momenta differ by
    that constant factor and their signs (hence the steps) are the same. A sample whose
    gradient is exactly zero gets a zero step here (torchattacks divides by zero).

    Args:
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C); owns any normalisation.
      x: (B, H, W, C) float images in [0, 1].
      y: (B,) int true labels.
      eps: radius of the ball (in ``norm``).
      steps: number of steps T.
      step_size: size of each step (in ``norm``); ``None`` means ``eps / steps``.
      decay: momentum decay mu.
      y_target: (B,) int target labels for a targeted attack.
      loss: ``"ce"``, ``"margin"`` or a function ``(logits, labels) -> (B,)`` to maximise.
      norm: ``"linf"`` or ``"l2"``: the ball, the step and ``AttackResult.norm``.

    Returns:
      ``AttackResult`` with ``norm`` norms and ``iterations == steps``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxlogit import attacks
      >>> w = jax.random.normal(jax.random.key(1), (16, 3))   # a linear model: 4x4x1 images, 3 classes
      >>> logits_fn = lambda images: images.reshape(images.shape[0], -1) @ w
      >>> x = jax.random.uniform(jax.random.key(2), (8, 4, 4, 1))
      >>> y = logits_fn(x).argmax(-1)                          # every image starts correctly classified
      >>> res = attacks.mim(logits_fn, x, y, eps=0.1, steps=5)
      >>> bool((res.norm <= 0.1 + 1e-6).all()), bool(((res.x_adv >= 0) & (res.x_adv <= 1)).all())
      (True, True)
      >>> bool((res.logits == logits_fn(res.x_adv)).all())
      True
    """
    x, y, labels, targeted = _checks.attack_inputs(x, y, y_target)
    _checks.positive("eps", eps)
    steps = _checks.count("steps", steps)
    step_size = eps / steps if step_size is None else _checks.positive("step_size", step_size)
    _checks.non_negative("decay", decay)
    norm = _geometry.resolve(norm)
    fn_static, fn_arrays = split_logits_fn(logits_fn)
    res = _program(
        fn_arrays,
        x,
        labels,
        jnp.float32(eps),
        jnp.float32(step_size),
        jnp.float32(decay),
        fn_static=fn_static,
        steps=steps,
        loss=_losses.resolve(loss),
        targeted=targeted,
        norm=norm,
    )
    _checks.labels_fit(res.logits.shape[-1], y, labels, targeted)
    return res
