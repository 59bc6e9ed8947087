"""Carlini & Wagner L2 (2017): tanh box, Adam, per-sample binary search, keep the best."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxlogit import _xla
from jaxlogit.attacks import _checks, _losses, _norms, _result
from jaxlogit.attacks._compile import StaticFn, split_logits_fn

_TANH_SHRINK = 0.999999  # keeps arctanh finite at pixels 0 and 1 (reference implementation)
_NO_UPPER_BOUND = 1e10  # the reference's initial upper bound; below 1e9 means "found one"


class Best(NamedTuple):
    """Each sample's smallest-L2 successful example so far.

    Attributes:
      squared_l2: (B,) its squared L2 distance to the clean image (inf while none found).
      x_adv: (B, H, W, C) the example (the clean image while none found).
      step: (B,) int32 the 1-based global step that found it (0 while none found).
    """

    squared_l2: jax.Array
    x_adv: jax.Array
    step: jax.Array


class SearchBounds(NamedTuple):
    """Per-sample binary search on the constant c: (B,) each."""

    const: jax.Array
    lower: jax.Array
    upper: jax.Array


def to_tanh_space(x: jax.Array) -> jax.Array:
    """Images in [0, 1] -> unconstrained ``w`` with ``from_tanh_space(w) ~= x``."""
    return jnp.arctanh((2.0 * x - 1.0) * _TANH_SHRINK)


def from_tanh_space(w: jax.Array) -> jax.Array:
    """Unconstrained ``w`` -> images ``(tanh(w) + 1) / 2`` in [0, 1]."""
    return (jnp.tanh(w) + 1.0) / 2.0


def f6(logits: jax.Array, labels: jax.Array, confidence: jax.Array, targeted: bool) -> jax.Array:
    """C&W's f6 loss (B,): zero once the label (target) is beaten by ``confidence``.

    Untargeted ``max(z_y - max_{j != y} z_j + kappa, 0)``; targeted
    ``max(max_{j != t} z_j - z_t + kappa, 0)``.
    """
    margin = _losses.margin(logits, labels)
    return jax.nn.relu(confidence + (margin if targeted else -margin))


def confident_success(logits, labels, confidence, targeted: bool) -> jax.Array:
    """(B,) bool: success after handicapping the label's logit by ``confidence`` (reference)."""
    handicap = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype) * confidence
    return _result.is_success(logits - handicap if targeted else logits + handicap, labels, targeted)


def keep_smallest_success(
    best: Best, x_adv: jax.Array, squared_l2: jax.Array, success: jax.Array, step: jax.Array
) -> Best:
    """Replaces each sample's best by ``x_adv`` where it succeeded with a smaller L2."""
    better = success & (squared_l2 < best.squared_l2)
    return Best(
        squared_l2=jnp.where(better, squared_l2, best.squared_l2),
        x_adv=jnp.where(_norms.per_sample(better, x_adv), x_adv, best.x_adv),
        step=jnp.where(better, step, best.step),
    )


def update_bounds(bounds: SearchBounds, found: jax.Array) -> SearchBounds:
    """One binary-search update of each sample's constant, as in Carlini's reference.

    A success lowers the upper bound to c; a failure raises the lower bound to c. Then c is
    the midpoint if an upper bound exists, else c is multiplied by 10.

    Args:
      bounds: the current constants and bounds, (B,) each.
      found: (B,) bool, whether this search step found any successful example.
    """
    upper = jnp.where(found, jnp.minimum(bounds.upper, bounds.const), bounds.upper)
    lower = jnp.where(found, bounds.lower, jnp.maximum(bounds.lower, bounds.const))
    const = jnp.where(upper < 1e9, (lower + upper) / 2.0, bounds.const * 10.0)
    return SearchBounds(const=const, lower=lower, upper=upper)


def _search(
    logits_fn,
    x,
    labels,
    w_start,
    const,
    confidence,
    optimizer,
    best,
    first_step,
    *,
    steps: int,
    targeted: bool,
) -> tuple[Best, jax.Array]:
    """``steps`` Adam steps from ``w_start`` at constants ``const`` (B,); returns (best, found)."""

    def objective(w):
        x_adv = from_tanh_space(w)
        logits = logits_fn(x_adv)
        squared_l2 = _norms.squared_l2_norm(x_adv - x)
        total = jnp.sum(squared_l2 + const * f6(logits, labels, confidence, targeted))
        return total, (x_adv, logits, squared_l2)

    def adam_step(t, carry):
        w, opt_state, best, found = carry
        (_, (x_adv, logits, squared_l2)), grad = jax.value_and_grad(objective, has_aux=True)(w)
        success = confident_success(logits, labels, confidence, targeted)
        best = keep_smallest_success(best, x_adv, squared_l2, success, first_step + t + 1)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int counts and floats
            updates, opt_state = optimizer.update(grad, opt_state, w)
        return optax.apply_updates(w, updates), opt_state, best, found | success

    found = jnp.zeros(labels.shape, jnp.bool_)
    init = (w_start, optimizer.init(w_start), best, found)
    _, _, best, found = lax.fori_loop(0, steps, adam_step, init)
    return best, found


@_xla.jit(static_argnames=("fn_static", "steps", "search_steps", "targeted"))
def _program(
    fn_arrays,
    x,
    labels,
    initial_const,
    confidence,
    lr,
    *,
    fn_static: StaticFn,
    steps: int,
    search_steps: int,
    targeted: bool,
) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    optimizer = optax.adam(lr)
    w_start = to_tanh_space(x)
    batch = labels.shape

    def search_step(s, carry):
        bounds, best = carry
        best, found = _search(
            logits_fn,
            x,
            labels,
            w_start,
            bounds.const,
            confidence,
            optimizer,
            best,
            s * steps,
            steps=steps,
            targeted=targeted,
        )
        return update_bounds(bounds, found), best

    bounds = SearchBounds(
        const=jnp.full(batch, initial_const, jnp.float32),
        lower=jnp.zeros(batch, jnp.float32),
        upper=jnp.full(batch, _NO_UPPER_BOUND, jnp.float32),
    )
    best = Best(jnp.full(batch, jnp.inf, jnp.float32), x, jnp.zeros(batch, jnp.int32))
    _, best = lax.fori_loop(0, search_steps, search_step, (bounds, best))
    res = _result.assemble(
        logits_fn, x, best.x_adv, labels, targeted=targeted, norm="l2", iterations=best.step
    )
    return _revert_unconfirmed(logits_fn, x, labels, best, res, targeted)


def _revert_unconfirmed(logits_fn, x, labels, best, res, targeted) -> _result.AttackResult:
    """Returns the clean image for any kept example that re-prediction does not confirm."""
    unconfirmed = (best.step > 0) & ~res.success

    def revert():
        x_adv = jnp.where(_norms.per_sample(unconfirmed, x), x, res.x_adv)
        iterations = jnp.where(unconfirmed, 0, res.iterations)
        return _result.assemble(
            logits_fn, x, x_adv, labels, targeted=targeted, norm="l2", iterations=iterations
        )

    return lax.cond(jnp.any(unconfirmed), revert, lambda: res)


def cw_l2(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    steps: int = 25,
    search_steps: int = 4,
    initial_const: float = 10.0,
    confidence: float = 0.0,
    lr: float = 0.01,
    y_target: jax.Array | None = None,
) -> _result.AttackResult:
    """C&W L2 with a per-sample binary search on c, all search steps in one compiled program.

    Optimises ``w`` with ``x_adv = (tanh(w) + 1) / 2`` to minimise
    ``||x_adv - x||^2 + c * f6(logits_fn(x_adv))`` by Adam (``steps`` steps, Adam state and
    ``w`` reset at every search step). Each sample has its own c: multiplied by 10 until the
    first success, then bisected between its bounds. Every step's iterate that succeeds with
    ``confidence`` and has a smaller L2 than the sample's best so far becomes the best; a sample
    never fooled is returned as its clean image.

    Args:
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C); owns any normalisation.
      x: (B, H, W, C) float images in [0, 1].
      y: (B,) int true labels.
      steps: Adam steps per search step.
      search_steps: binary-search steps on c.
      initial_const: starting c.
      confidence: kappa, the logit margin required for success inside the attack.
      lr: Adam learning rate.
      y_target: (B,) int target labels for a targeted attack.

    Returns:
      ``AttackResult`` with L2 norms; ``iterations`` is the step that found the returned
      example (0 if none).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxlogit import attacks
      >>> w = jax.random.normal(jax.random.key(1), (16, 3))   # a linear model: 4x4x1 images, 3 classes
      >>> logits_fn = lambda images: images.reshape(images.shape[0], -1) @ w
      >>> x = jax.random.uniform(jax.random.key(2), (8, 4, 4, 1))
      >>> y = logits_fn(x).argmax(-1)                          # every image starts correctly classified
      >>> res = attacks.cw_l2(logits_fn, x, y, steps=20, search_steps=2, lr=0.05)
      >>> res.x_adv.shape, res.norm.shape
      ((8, 4, 4, 1), (8,))
      >>> bool((res.norm[~res.success] == 0).all())            # an unfooled image is returned as it was
      True
    """
    x, y, labels, targeted = _checks.attack_inputs(x, y, y_target)
    steps = _checks.count("steps", steps)
    search_steps = _checks.count("search_steps", search_steps)
    _checks.positive("initial_const", initial_const)
    _checks.non_negative("confidence", confidence)
    _checks.positive("lr", lr)
    fn_static, fn_arrays = split_logits_fn(logits_fn)
    res = _program(
        fn_arrays,
        x,
        labels,
        jnp.float32(initial_const),
        jnp.float32(confidence),
        jnp.float32(lr),
        fn_static=fn_static,
        steps=steps,
        search_steps=search_steps,
        targeted=targeted,
    )
    _checks.labels_fit(res.logits.shape[-1], y, labels, targeted)
    return res
