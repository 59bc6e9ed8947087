"""The attack loops as they were before the geometry refactor, kept as the bitwise reference.

These are verbatim copies of jaxlogit 00ca609's ``attacks/_norms.py`` (the L-inf pieces),
``_pgd.linf_pgd`` and its ``_program``, ``_mim.linf_mim`` and its ``_program`` (renamed
``pgd_program`` / ``mim_program`` here) and ``_adaptive``'s ``linf_track`` with what it calls
(``track_init``, ``keep_best``, ``judge_and_grad``, ``linf_random_starts``, ``_advance_program``,
``_restarts_program``). ``tests/test_attack_geometry.py`` checks that the refactored attacks
give bitwise the same results. Do not edit them: they are the "before" of that comparison.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogit import _xla
from jaxlogit.attacks import _losses, _result
from jaxlogit.attacks._adaptive import Judged, Objective, Tracked
from jaxlogit.attacks._compile import StaticFn

_TINY = 1e-12


def per_sample(values: jax.Array, like: jax.Array) -> jax.Array:
    """Reshapes per-sample ``values`` (B,) to broadcast against ``like`` (B, ...)."""
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


def flat(values: jax.Array) -> jax.Array:
    """(B, ...) -> (B, D), also for an empty batch (where ``reshape(B, -1)`` is ambiguous)."""
    return values.reshape(values.shape[0], math.prod(values.shape[1:]))


def linf_norm(delta: jax.Array) -> jax.Array:
    """L-inf norm of each sample of ``delta`` (B, ...) -> (B,)."""
    return jnp.max(jnp.abs(flat(delta)), axis=1, initial=0.0)


def l1_normalise(g: jax.Array) -> jax.Array:
    """Divides each sample of ``g`` (B, ...) by its L1 norm (an all-zero sample stays zero)."""
    l1 = jnp.sum(jnp.abs(flat(g)), axis=1)
    return g / per_sample(jnp.maximum(l1, _TINY), g)


def clip_box(x: jax.Array) -> jax.Array:
    """Clips pixel values to the image box [0, 1]."""
    return jnp.clip(x, 0.0, 1.0)


def linf_project(x_adv: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """Projects ``x_adv`` onto the L-inf ``eps``-ball around ``x``, then into [0, 1]."""
    return clip_box(x + jnp.clip(x_adv - x, -eps, eps))


def linf_random_start(key: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """A uniform random point of the L-inf ``eps``-ball around ``x``, clipped to [0, 1]."""
    noise = jax.random.uniform(key, x.shape, x.dtype, minval=-1.0, maxval=1.0)
    return clip_box(x + eps * noise)


def linf_sign_step(x_adv: jax.Array, direction: jax.Array, step_size: jax.Array) -> jax.Array:
    """One L-inf steepest-ascent step: ``x_adv + step_size * sign(direction)``."""
    return x_adv + step_size * jnp.sign(direction)


# The module ``_norms`` of 00ca609, as the loops below call it.
_norms = types.SimpleNamespace(
    per_sample=per_sample,
    flat=flat,
    linf_norm=linf_norm,
    l1_normalise=l1_normalise,
    clip_box=clip_box,
    linf_project=linf_project,
    linf_random_start=linf_random_start,
    linf_sign_step=linf_sign_step,
)


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
def pgd_program(
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
) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    x_start = _norms.linf_random_start(key, x, eps) if random_start else x
    x_adv = linf_pgd(logits_fn, x, labels, x_start, eps, step_size, steps=steps, loss=loss, targeted=targeted)
    iterations = jnp.full(x.shape[:1], steps, jnp.int32)
    return _result.assemble(
        logits_fn, x, x_adv, labels, targeted=targeted, norm="linf", iterations=iterations
    )


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
def mim_program(
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
) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    x_adv = linf_mim(logits_fn, x, labels, eps, step_size, decay, steps=steps, loss=loss, targeted=targeted)
    iterations = jnp.full(x.shape[:1], steps, jnp.int32)
    return _result.assemble(
        logits_fn, x, x_adv, labels, targeted=targeted, norm="linf", iterations=iterations
    )


def track_init(x: jax.Array, num_classes: int) -> Tracked:
    """The ``Tracked`` state before any iterate: (B, H, W, C) images, C classes."""
    batch = x.shape[0]
    return Tracked(
        x_adv=x,
        logits=jnp.zeros((batch, num_classes), jnp.float32),
        value=jnp.full((batch,), -jnp.inf, jnp.float32),
        success=jnp.zeros((batch,), jnp.bool_),
        first_success=jnp.full((batch,), -1, jnp.int32),
    )


def keep_best(tracked: Tracked, x_adv: jax.Array, judged: Judged, steps_spent: jax.Array) -> Tracked:
    """Takes ``x_adv`` where it is the first success, or a higher value while none succeeded."""
    first = judged.success & ~tracked.success
    higher = ~judged.success & ~tracked.success & (judged.value > tracked.value)
    take = first | higher
    return Tracked(
        x_adv=jnp.where(_norms.per_sample(take, x_adv), x_adv, tracked.x_adv),
        logits=jnp.where(take[:, None], judged.logits.astype(jnp.float32), tracked.logits),
        value=jnp.where(take, judged.value.astype(jnp.float32), tracked.value),
        success=tracked.success | judged.success,
        first_success=jnp.where(first, jnp.asarray(steps_spent, jnp.int32), tracked.first_success),
    )


def judge_and_grad(objective: Objective, x_adv: jax.Array, side: Any) -> tuple[Judged, jax.Array]:
    """The verdict on ``x_adv`` and the gradient of each sample's value w.r.t. its own input."""

    def total(images):
        judged = objective(images, side)
        return jnp.sum(judged.value), judged

    (_, judged), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
    return judged, grad


def linf_track(
    objective: Objective, x, side, x_current, tracked: Tracked, eps, step_size, steps_spent, steps
) -> tuple[jax.Array, Tracked]:
    """``steps`` signed-gradient steps from ``x_current``, judging every iterate (traceable).

    Judges ``x_current`` and the point after each step (``steps + 1`` iterates, numbered
    ``steps_spent .. steps_spent + steps``) and returns the last point and the updated state.
    ``steps`` may be traced.
    """

    def step(t, carry):
        x_cur, best = carry
        judged, grad = judge_and_grad(objective, x_cur, side)
        best = keep_best(best, x_cur, judged, steps_spent + t)
        return _norms.linf_project(_norms.linf_sign_step(x_cur, grad, step_size), x, eps), best

    x_last, tracked = lax.fori_loop(0, steps, step, (x_current, tracked))
    return x_last, keep_best(tracked, x_last, objective(x_last, side), steps_spent + steps)


@_xla.jit(static_argnames=("obj_static",))
def _advance_program(
    obj_arrays, x, side, x_current, tracked, eps, step_size, steps_spent, steps, *, obj_static: StaticFn
):
    objective = obj_static.bind(obj_arrays)
    return linf_track(objective, x, side, x_current, tracked, eps, step_size, steps_spent, steps)


@_xla.jit
def linf_random_starts(keys: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """A uniform point of each sample's L-inf ``eps``-ball (clipped to [0, 1]), from its own key.

    Args:
      keys: (B,) keys, one per sample (``sample_keys``).
      x: (B, H, W, C) clean images.
      eps: radius.
    """
    noise = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, -1.0, 1.0))(keys)
    return _norms.clip_box(x + eps * noise)


@_xla.jit(static_argnames=("obj_static",))
def _restarts_program(
    obj_arrays, x, labels, keys, eps, step_size, steps, restarts, *, obj_static: StaticFn
) -> Tracked:
    objective = obj_static.bind(obj_arrays)

    def restart(r, tracked):
        start = linf_random_starts(jax.vmap(jax.random.fold_in, (0, None))(keys, r), x, eps)
        _, tracked = linf_track(objective, x, labels, start, tracked, eps, step_size, r * steps, steps)
        return tracked

    num_classes = jax.eval_shape(objective, x, labels).logits.shape[-1]
    return lax.fori_loop(0, restarts, restart, track_init(x, num_classes))
