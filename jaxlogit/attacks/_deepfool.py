"""DeepFool (Moosavi-Dezfooli et al. 2016), L2, batched; finished samples drop out of the work."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from jaxlogit import _xla, backend
from jaxlogit.attacks import _checks, _compaction, _norms, _result
from jaxlogit.attacks._compile import StaticFn, split_logits_fn

_TINY = 1e-12
_STEP_MARGIN = 1e-4  # added to the linearised distance, as in the reference implementation
# Each iteration runs on the still active samples only, CHUNK at a time on the XLA:CPU path
# (also keeps the K - 1 batched vjps' activations small enough for the CPU caches; 8-16
# measured fastest on CPU); other backends take the whole batch (``backend.deepfool_chunk``).
CHUNK = backend.CPU_DEEPFOOL_CHUNK


class _Rows(NamedTuple):
    """Per-sample loop state; every leaf has the batch first."""

    r_total: jax.Array  # (B, H, W, C) accumulated perturbation
    x_adv: jax.Array  # (B, H, W, C) clip(x + (1 + overshoot) * r_total)
    active: jax.Array  # (B,) bool: still classified as its label
    iterations: jax.Array  # (B,) int32 steps taken


class _State(NamedTuple):
    iteration: jax.Array  # () int32
    rows: _Rows


def candidate_cotangents(candidates: jax.Array, num_classes: int) -> jax.Array:
    """One-hot cotangents selecting ``z_k - z_0`` for each candidate k > 0.

    Args:
      candidates: (B, K) class indices, the clean class first.
      num_classes: C.

    Returns:
      (K - 1, B, C) cotangents; a vjp with row k gives ``grad(z_{k+1} - z_0)``.
    """
    one_hot = jax.nn.one_hot(candidates, num_classes, dtype=jnp.float32)  # (B, K, C)
    return jnp.moveaxis(one_hot[:, 1:] - one_hot[:, :1], 1, 0)


def linearised_step(logit_gaps: jax.Array, gap_grads: jax.Array) -> jax.Array:
    """The DeepFool step to the nearest linearised boundary among the candidates.

    Args:
      logit_gaps: (B, K-1) ``z_k - z_0`` for the candidates k > 0.
      gap_grads: (K-1, B, H, W, C) their input gradients ``w_k``.

    Returns:
      (B, H, W, C) ``r = (|f_l| / ||w_l|| + 1e-4) * w_l / ||w_l||`` with ``l`` the candidate
      whose boundary is nearest, ``argmin_k |f_k| / ||w_k||``.
    """
    norms = jnp.maximum(jax.vmap(_norms.l2_norm)(gap_grads), _TINY).T  # (B, K-1)
    distances = jnp.abs(logit_gaps) / norms
    nearest = jnp.argmin(distances, axis=1)  # (B,)
    w = gap_grads[nearest, jnp.arange(nearest.shape[0])]  # (B, H, W, C)
    distance = jnp.take_along_axis(distances, nearest[:, None], axis=1)[:, 0]
    norm = jnp.take_along_axis(norms, nearest[:, None], axis=1)[:, 0]
    return _norms.per_sample((distance + _STEP_MARGIN) / norm, w) * w


def step_rows(
    logits_fn: Callable, overshoot: jax.Array, inputs: tuple[jax.Array, jax.Array, jax.Array], rows: _Rows
) -> _Rows:
    """One DeepFool iteration on n samples: stop those now misclassified, step the others.

    One forward pass (with its vjp) at ``rows.x_adv``; the ``K - 1`` candidate vjps run only
    while some of the n samples is still active. Inactive rows come back unchanged.

    Args:
      logits_fn: images (n, H, W, C) -> logits (n, C).
      overshoot: () float.
      inputs: ``(x, y, top)``: clean images (n, H, W, C), labels (n,), candidates (n, K).
      rows: the n samples' loop state.

    Returns:
      The n samples' state after the iteration.
    """
    x, y, top = inputs
    logits, vjp_fn = jax.vjp(logits_fn, rows.x_adv)
    active = rows.active & (jnp.argmax(logits, axis=-1).astype(y.dtype) == y)

    def step() -> jax.Array:
        cotangents = candidate_cotangents(top, logits.shape[-1])
        (gap_grads,) = jax.vmap(vjp_fn)(cotangents)
        candidate_logits = jnp.take_along_axis(logits, top, axis=1)
        gaps = candidate_logits[:, 1:] - candidate_logits[:, :1]
        r = linearised_step(gaps, gap_grads)
        return rows.r_total + jnp.where(_norms.per_sample(active, r), r, 0.0)

    r_total = lax.cond(jnp.any(active), step, lambda: rows.r_total)
    return _Rows(
        r_total=r_total,
        x_adv=_norms.clip_box(x + (1.0 + overshoot) * r_total),
        active=active,
        iterations=rows.iterations + active.astype(jnp.int32),
    )


def _iterate(logits_fn, inputs, overshoot, chunk, state: _State) -> _State:
    """One iteration, run only on the still active samples, ``chunk`` at a time."""
    body = functools.partial(step_rows, logits_fn, overshoot)
    rows = _compaction.on_active_rows(body, state.rows.active, inputs, state.rows, chunk=chunk)
    return _State(iteration=state.iteration + 1, rows=rows)


@_xla.jit(static_argnames=("fn_static", "candidates", "chunk"))
def _program(
    fn_arrays, x, y, overshoot, max_iter, *, fn_static: StaticFn, candidates: int, chunk: int
) -> _result.AttackResult:
    logits_fn = fn_static.bind(fn_arrays)
    clean_logits = logits_fn(x)
    num_classes = clean_logits.shape[-1]
    _, top = lax.top_k(clean_logits, min(candidates, num_classes))  # (B, K), clean class first
    init = _State(
        iteration=jnp.zeros((), jnp.int32),
        rows=_Rows(
            r_total=jnp.zeros_like(x),
            x_adv=x,
            active=jnp.argmax(clean_logits, axis=-1).astype(y.dtype) == y,
            iterations=jnp.zeros(y.shape, jnp.int32),
        ),
    )
    final = lax.while_loop(
        lambda s: (s.iteration < max_iter) & jnp.any(s.rows.active),
        functools.partial(_iterate, logits_fn, (x, y, top), overshoot, chunk),
        init,
    )
    return _result.assemble(
        logits_fn, x, final.rows.x_adv, y, targeted=False, norm="l2", iterations=final.rows.iterations
    )


def deepfool(
    logits_fn: Callable,
    x: jax.Array,
    y: jax.Array,
    *,
    candidates: int = 10,
    max_iter: int = 100,
    overshoot: float = 0.02,
    chunk: int | None = None,
) -> _result.AttackResult:
    """Untargeted L2 DeepFool over the clean input's most likely classes.

    Per iteration and sample: one forward pass and ``candidates - 1`` vector-Jacobian products
    (the gradients of ``z_k - z_clean`` for the candidates only), a step to the nearest
    linearised boundary, ``x_adv = clip(x + (1 + overshoot) * r_total, 0, 1)``. A sample stops
    (its perturbation freezes) as soon as ``argmax logits_fn(x_adv) != y``; the loop ends when
    every sample has stopped or after ``max_iter`` iterations. Samples misclassified from the
    start are returned unchanged. Each iteration runs only on the samples still active,
    gathered ``chunk`` at a time, so finished samples cost no further forward or gradient work.

    Args:
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C); owns any normalisation.
      x: (B, H, W, C) float images in [0, 1].
      y: (B,) int true labels.
      candidates: number K of most likely clean classes considered (clean class included;
        capped at C).
      max_iter: maximum number of iterations.
      overshoot: the accumulated perturbation is scaled by ``1 + overshoot``.
      chunk: active samples per compacted chunk (None: ``jaxlogit.backend.deepfool_chunk()``,
        16 on the XLA:CPU path, the whole batch on GPU/TPU). Same results up to float rounding.

    Returns:
      ``AttackResult`` with L2 norms; ``iterations`` counts each sample's steps.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jaxlogit import attacks
      >>> w = jax.random.normal(jax.random.key(1), (16, 3))   # a linear model: 4x4x1 images, 3 classes
      >>> logits_fn = lambda images: images.reshape(images.shape[0], -1) @ w
      >>> x = jax.random.uniform(jax.random.key(2), (8, 4, 4, 1))
      >>> y = logits_fn(x).argmax(-1)                          # every image starts correctly classified
      >>> res = attacks.deepfool(logits_fn, x, y, candidates=3, max_iter=50)
      >>> float(res.success.mean())                            # a linear model is always fooled
      1.0
      >>> bool(jnp.allclose(res.norm, jnp.sqrt(((res.x_adv - x) ** 2).sum((1, 2, 3))), atol=1e-5))
      True
    """
    x, y, _, _ = _checks.attack_inputs(x, y, None)
    candidates = _checks.count("candidates", candidates, minimum=2)
    max_iter = _checks.count("max_iter", max_iter)
    _checks.non_negative("overshoot", overshoot)
    chunk = backend.deepfool_chunk() if chunk is None else _checks.count("chunk", chunk)
    fn_static, fn_arrays = split_logits_fn(logits_fn)
    res = _program(
        fn_arrays,
        x,
        y,
        jnp.float32(overshoot),
        jnp.int32(max_iter),
        fn_static=fn_static,
        candidates=candidates,
        chunk=x.shape[0] if chunk is None else min(chunk, x.shape[0]),
    )
    _checks.labels_fit(res.logits.shape[-1], y, y, False)
    return res
