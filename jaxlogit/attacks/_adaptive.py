"""PGD (L-inf or L2) that keeps each sample's best iterate: any objective, restarts, resumable in chunks.

An honest (adaptive) evaluation needs more than the paper's 10-step PGD: many steps, several
random restarts, losses other than cross-entropy, objectives that are not a loss of the logits
(logit matching) and a result that can only get stronger with more steps. Here every iterate
(each random start and the point after each step) is judged, and each sample keeps the *first*
iterate that succeeded, or else the one with the highest objective value. The samples fooled
within ``s`` steps are therefore a subset of those fooled within ``s' > s`` steps of the same run,
by construction, and ``Tracked.first_success`` gives the accuracy for every step budget.

An *objective* maps ``(x_adv (B, H, W, C), side) -> Judged`` where ``side`` is any pytree of
per-sample arrays (labels, target logits, ...). Bind its weights with ``functools.partial`` /
``jax.tree_util.Partial`` (as for a ``logits_fn``) so they are traced program inputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogit import _xla
from jaxlogit.attacks import _checks, _geometry, _losses, _norms, _result
from jaxlogit.attacks._compile import StaticFn, split_logits_fn
from jaxlogit.errors import JaxlogitError


class Judged(NamedTuple):
    """An objective's verdict on a batch of iterates.

    Attributes:
      value: (B,) what the attack maximises.
      success: (B,) bool, whether the iterate achieves the attack's goal.
      logits: (B, C) the logits reported with the iterate (e.g. of the defended model).
    """

    value: jax.Array
    success: jax.Array
    logits: jax.Array


Objective = Callable[[jax.Array, Any], Judged]


class Tracked(NamedTuple):
    """Each sample's best iterate so far.

    Attributes:
      x_adv: (B, H, W, C) the first successful iterate, else the highest-value one (the clean
        image before any iterate was judged).
      logits: (B, C) the objective's logits of ``x_adv``.
      value: (B,) the objective value of ``x_adv`` (-inf before any iterate was judged).
      success: (B,) bool, whether any judged iterate succeeded.
      first_success: (B,) int32, gradient steps spent (over all restarts) when the sample
        first succeeded; -1 if it never did.
    """

    x_adv: jax.Array
    logits: jax.Array
    value: jax.Array
    success: jax.Array
    first_success: jax.Array


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


def track(
    objective: Objective,
    geometry: _geometry.Geometry,
    x,
    side,
    x_current,
    tracked: Tracked,
    eps,
    step_size,
    steps_spent,
    steps,
) -> tuple[jax.Array, Tracked]:
    """``steps`` gradient steps of ``geometry`` from ``x_current``, judging every iterate (traceable).

    Judges ``x_current`` and the point after each step (``steps + 1`` iterates, numbered
    ``steps_spent .. steps_spent + steps``) and returns the last point and the updated state.
    Each step is ``_geometry.ascent_step`` with the gradient rule, as in ``pgd``.
    ``steps`` may be traced.
    """
    rule = _geometry.gradient_rule()

    def step(t, carry):
        x_cur, best = carry
        judged, grad = judge_and_grad(objective, x_cur, side)
        best = keep_best(best, x_cur, judged, steps_spent + t)
        x_next, _ = _geometry.ascent_step(geometry, rule, x_cur, grad, (), x=x, eps=eps, step_size=step_size)
        return x_next, best

    x_last, tracked = lax.fori_loop(0, steps, step, (x_current, tracked))
    return x_last, keep_best(tracked, x_last, objective(x_last, side), steps_spent + steps)


@_xla.jit(static_argnames=("obj_static",))
def _advance_program(
    obj_arrays, x, side, x_current, tracked, eps, step_size, steps_spent, steps, *, obj_static: StaticFn
):
    objective = obj_static.bind(obj_arrays)
    return track(
        objective,
        _geometry.GEOMETRIES["linf"],
        x,
        side,
        x_current,
        tracked,
        eps,
        step_size,
        steps_spent,
        steps,
    )


def linf_advance(
    objective: Objective,
    x,
    side,
    x_current,
    tracked: Tracked,
    *,
    eps: float,
    step_size: float,
    steps: int,
    steps_spent: int = 0,
) -> tuple[jax.Array, Tracked]:
    """Continues an L-inf attack for ``steps`` steps (one compiled program; resumable).

    Call it repeatedly (on the samples still worth attacking) to run a long attack in chunks;
    neither ``steps`` nor ``steps_spent`` nor ``eps`` recompiles.

    Args:
      objective: ``(x_adv (B, H, W, C), side) -> Judged``; a partial binding weights is best.
      x: (B, H, W, C) clean images in [0, 1] (centre of the ball).
      side: pytree of per-sample arrays passed to ``objective``.
      x_current: (B, H, W, C) the current iterate (e.g. ``linf_random_starts``).
      tracked: the best iterates so far (``track_init`` to start).
      eps, step_size: ball radius and sign-step size.
      steps: number of steps (>= 0).
      steps_spent: gradient steps already spent on these samples (numbers the iterates).

    Returns:
      ``(x_last (B, H, W, C), tracked)``.
    """
    _checks.positive("eps", eps)
    _checks.positive("step_size", step_size)
    steps = _checks.count("steps", steps, minimum=0)
    obj_static, obj_arrays = split_logits_fn(objective)
    return _advance_program(
        obj_arrays,
        jnp.asarray(x, jnp.float32),
        side,
        jnp.asarray(x_current, jnp.float32),
        tracked,
        jnp.float32(eps),
        jnp.float32(step_size),
        jnp.int32(steps_spent),
        jnp.int32(steps),
        obj_static=obj_static,
    )


def sample_keys(key: jax.Array, ids: jax.Array) -> jax.Array:
    """One key per sample, ``fold_in(key, id)``: independent of batch composition. (B,) keys."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(ids, jnp.uint32))


def random_starts(geometry: _geometry.Geometry, keys: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """``geometry.random_start`` of each sample from its own key: (B,) keys, (B, H, W, C) -> (B, H, W, C)."""
    return _geometry.sample_starts(geometry, keys, x, eps)


@_xla.jit
def linf_random_starts(keys: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """A uniform point of each sample's L-inf ``eps``-ball (clipped to [0, 1]), from its own key.

    Args:
      keys: (B,) keys, one per sample (``sample_keys``).
      x: (B, H, W, C) clean images.
      eps: radius.
    """
    return random_starts(_geometry.GEOMETRIES["linf"], keys, x, eps)


@dataclasses.dataclass(frozen=True)
class LossObjective:
    """``(logits_fn, x_adv, labels) -> Judged``: a loss of ``logits_fn(x_adv)`` as an objective."""

    loss: _losses.Loss
    targeted: bool = False

    def __call__(self, logits_fn: Callable, x_adv: jax.Array, labels: jax.Array) -> Judged:
        logits = logits_fn(x_adv)
        return Judged(
            value=_losses.objective(self.loss, logits, labels, self.targeted),
            success=_result.is_success(logits, labels, self.targeted),
            logits=logits,
        )


def loss_objective(
    logits_fn: Callable, loss: str | _losses.Loss = "ce", *, targeted: bool = False
) -> jax.tree_util.Partial:
    """The objective "maximise ``loss`` of ``logits_fn``" with side = labels (B,).

    Success is ``argmax != labels`` (targeted: ``== labels``), as for every attack.
    """
    return jax.tree_util.Partial(LossObjective(_losses.resolve(loss), targeted), logits_fn)


@_xla.jit(static_argnames=("obj_static", "norm"))
def _restarts_program(
    obj_arrays, x, labels, keys, eps, step_size, steps, restarts, *, obj_static: StaticFn, norm: str
) -> Tracked:
    objective = obj_static.bind(obj_arrays)
    geometry = _geometry.GEOMETRIES[norm]

    def restart(r, tracked):
        start = random_starts(geometry, jax.vmap(jax.random.fold_in, (0, None))(keys, r), x, eps)
        _, tracked = track(objective, geometry, x, labels, start, tracked, eps, step_size, r * steps, steps)
        return tracked

    num_classes = jax.eval_shape(objective, x, labels).logits.shape[-1]
    return lax.fori_loop(0, restarts, restart, track_init(x, num_classes))


def pgd_restarts(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    key: jax.Array,
    eps: float = 16 / 255,
    steps: int = 100,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str | _losses.Loss = "ce",
    y_target: jax.Array | None = None,
    norm: str = "linf",
) -> _result.AttackResult:
    """PGD with random restarts that returns each sample's best iterate (one program).

    Each restart starts uniformly in the ball (sample i of restart r uses
    ``fold_in(fold_in(key, i), r)``) and takes ``steps`` projected steepest-ascent steps.
    Every iterate is judged; a sample keeps its first successful iterate, else its highest-loss
    one, so more steps or restarts never make the attack weaker.

    Args:
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C); owns any normalisation.
      x: (B, H, W, C) float images in [0, 1].
      y: (B,) int true labels.
      key: PRNG key of the random starts.
      eps: radius of the ball (in ``norm``).
      steps: steps per restart.
      step_size: size of each step (in ``norm``); ``None`` means ``eps / 8``.
      restarts: number of random restarts (>= 1).
      loss: ``"ce"``, ``"margin"`` or a function ``(logits, labels) -> (B,)`` to maximise.
      y_target: (B,) int target labels for a targeted attack.
      norm: ``"linf"`` or ``"l2"`` (as in ``pgd``; the default ``eps`` is an L-inf size).

    Returns:
      ``AttackResult``; ``iterations`` is the gradient step (over all restarts) that found the
      returned example if it succeeded, else ``restarts * steps``.
    """
    x, y, labels, targeted = _checks.attack_inputs(x, y, y_target)
    _checks.positive("eps", eps)
    step_size = eps / 8 if step_size is None else _checks.positive("step_size", step_size)
    steps = _checks.count("steps", steps)
    restarts = _checks.count("restarts", restarts)
    if key is None:
        raise JaxlogitError("pgd_restarts needs key=jax.random.key(seed) for its random starts")
    norm = _geometry.resolve(norm)
    obj_static, obj_arrays = split_logits_fn(loss_objective(logits_fn, loss, targeted=targeted))
    tracked = _restarts_program(
        obj_arrays,
        x,
        labels,
        sample_keys(key, jnp.arange(x.shape[0])),
        jnp.float32(eps),
        jnp.float32(step_size),
        jnp.int32(steps),
        jnp.int32(restarts),
        obj_static=obj_static,
        norm=norm,
    )
    _checks.labels_fit(tracked.logits.shape[-1], y, labels, targeted)
    iterations = jnp.where(tracked.success, tracked.first_success, restarts * steps)
    return _result.AttackResult(
        x_adv=tracked.x_adv,
        success=tracked.success,
        logits=tracked.logits,
        norm=_geometry.GEOMETRIES[norm].norm(tracked.x_adv - x),
        iterations=iterations,
    )
