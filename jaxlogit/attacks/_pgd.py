"""Projected gradient descent (Madry et al. 2018) under the L-inf or L2 norm, as one jitted program.

``ascend`` is the loop PGD and MIM share (MIM is PGD with a momentum step rule)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogit import _xla
from jaxlogit.attacks import _checks, _geometry, _losses, _result
from jaxlogit.attacks._compile import StaticFn, split_logits_fn
from jaxlogit.errors import JaxlogitError


def ascend(
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
    geometry: _geometry.Geometry,
    rule: _geometry.StepRule,
) -> jax.Array:
    """Runs ``steps`` projected ascent steps from ``x_start`` (traceable, not jitted).

    Each step: ``x_adv <- project(step(x_adv, direction))`` onto the ``eps``-ball around ``x``
    and [0, 1], where ``rule`` turns the gradient of the objective into ``direction`` (PGD:
    ``_geometry.gradient_rule``, MIM: ``_geometry.momentum_rule``) and ``geometry`` gives the
    norm's step and projection. The loop of PGD and MIM.

    Args:
      logits_fn: images (B, H, W, C) -> logits (B, C).
      x: (B, H, W, C) clean images.
      labels: (B,) true labels (targeted: target labels).
      x_start: (B, H, W, C) starting point inside the ball.
      eps, step_size: scalars.
      steps: number of steps.
      loss: ``(logits, labels) -> (B,)`` to maximise (minimised when ``targeted``).
      targeted: whether to move towards ``labels``.
      geometry: the norm's pieces.
      rule: gradient -> step direction.

    Returns:
      (B, H, W, C) adversarial images.
    """

    def step(_, carry):
        x_adv, state = carry
        grad = _losses.input_gradient(logits_fn, x_adv, labels, loss, targeted)
        return _geometry.ascent_step(geometry, rule, x_adv, grad, state, x=x, eps=eps, step_size=step_size)

    x_adv, _ = lax.fori_loop(0, steps, step, (x_start, rule.init(x_start)))
    return x_adv


@_xla.jit(static_argnames=("fn_static", "steps", "random_start", "loss", "targeted", "norm"))
def _program(
    fn_arrays,
    x,
    labels,
    key,
    eps,
    step_size,
    *,
    fn_static: StaticFn,
    steps: int,
    random_start: bool,
    loss: _losses.Loss,
    targeted: bool,
    norm: str,
) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    geometry = _geometry.GEOMETRIES[norm]
    x_start = _geometry.sample_starts(geometry, key, x, eps) if random_start else x
    x_adv = ascend(
        logits_fn,
        x,
        labels,
        x_start,
        eps,
        step_size,
        steps=steps,
        loss=loss,
        targeted=targeted,
        geometry=geometry,
        rule=_geometry.gradient_rule(),
    )
    iterations = jnp.full(x.shape[:1], steps, jnp.int32)
    return _result.assemble(logits_fn, x, x_adv, labels, targeted=targeted, norm=norm, iterations=iterations)


def pgd(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array | None = None,
    eps: float = 16 / 255,
    steps: int = 10,
    step_size: float = 2 / 255,
    random_start: bool = True,
    y_target: jax.Array | None = None,
    loss: str | _losses.Loss = "ce",
    norm: str = "linf",
) -> _result.AttackResult:
    """PGD: a random start in the ``eps``-ball, then ``steps`` projected steepest-ascent steps.

    Under ``norm="linf"`` (the default) each step is ``step_size * sign(grad)``; under
    ``norm="l2"`` it is ``step_size * grad / ||grad||_2`` per sample and the ball is an L2
    ball. The defaults of ``eps`` and ``step_size`` are L-inf sizes for images in [0, 1]: with
    ``norm="l2"`` choosing them is the caller's job (an L2 ball of radius ``e`` lies inside the
    L-inf ball of radius ``e``, which lies inside the L2 ball of radius ``e * sqrt(H * W * C)``).

    The whole attack is one compiled program (cached: a second call with the same shapes and
    static settings does not recompile; ``eps`` and ``step_size`` are traced, so changing
    them does not recompile either). Pass the weights bound with ``functools.partial`` so they
    are program inputs rather than constants (see ``jaxlogit.attacks._compile``).

    Args:
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C); owns any normalisation.
      x: (B, H, W, C) float images in [0, 1].
      y: (B,) int true labels.
      key: PRNG key for the random start (required when ``random_start``): one key for the
        batch, or (B,) keys, one per sample (e.g. ``attacks.sample_keys(key, image_ids)``), so
        that a sample's start does not depend on the batch it is attacked in.
      eps: radius of the ball (in ``norm``).
      steps: number of gradient steps T.
      step_size: size of each step (in ``norm``).
      random_start: start from a uniform point of the ball (else from ``x``).
      y_target: (B,) int target labels for a targeted attack (minimises their loss).
      loss: ``"ce"`` (cross-entropy), ``"margin"`` (max other logit minus true logit) or a
        function ``(logits (B, C), labels (B,)) -> (B,)`` to maximise.
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
      >>> res = attacks.pgd(logits_fn, x, y, key=jax.random.key(0), eps=0.1, steps=5, step_size=0.02)
      >>> res.x_adv.shape, res.logits.shape, int(res.iterations[0])
      ((8, 4, 4, 1), (8, 3), 5)
      >>> bool((res.norm <= 0.1 + 1e-6).all()), bool((res.success == (res.logits.argmax(-1) != y)).all())
      (True, True)
    """
    x, y, labels, targeted = _checks.attack_inputs(x, y, y_target)
    _checks.positive("eps", eps)
    _checks.positive("step_size", step_size)
    steps = _checks.count("steps", steps)
    if random_start and key is None:
        raise JaxlogitError("pgd with random_start=True needs key=jax.random.key(seed)")
    if random_start:
        _checks.keys_fit(key, x.shape[0])
    norm = _geometry.resolve(norm)
    fn_static, fn_arrays = split_logits_fn(logits_fn)
    res = _program(
        fn_arrays,
        x,
        labels,
        key if random_start else None,
        jnp.float32(eps),
        jnp.float32(step_size),
        fn_static=fn_static,
        steps=steps,
        random_start=bool(random_start),
        loss=_losses.resolve(loss),
        targeted=targeted,
        norm=norm,
    )
    _checks.labels_fit(res.logits.shape[-1], y, labels, targeted)
    return res
