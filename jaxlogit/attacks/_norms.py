"""Per-norm building blocks shared by the attacks, written once.

All functions act on a batch: images ``(B, H, W, C)``, per-sample values ``(B,)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

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


def l2_norm(delta: jax.Array) -> jax.Array:
    """L2 norm of each sample of ``delta`` (B, ...) -> (B,)."""
    return jnp.sqrt(squared_l2_norm(delta))


def squared_l2_norm(delta: jax.Array) -> jax.Array:
    """Squared L2 norm of each sample of ``delta`` (B, ...) -> (B,)."""
    return jnp.sum(jnp.square(flat(delta)), axis=1)


NORMS = {"linf": linf_norm, "l2": l2_norm}


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


def l2_normalise(g: jax.Array) -> jax.Array:
    """Scales each sample of ``g`` (B, ...) to L2 norm 1 (an all-zero sample stays zero).

    Divides by the sample's largest ``|g|`` first, so a tiny or huge gradient neither underflows
    nor overflows when squared: the scaled sample has entries in [-1, 1], one of them +-1.
    """
    peak = per_sample(linf_norm(g), g)
    unit = g / jnp.where(peak > 0.0, peak, 1.0)
    return unit / per_sample(jnp.maximum(l2_norm(unit), 1.0), unit)


def l2_step(x_adv: jax.Array, direction: jax.Array, step_size: jax.Array) -> jax.Array:
    """One L2 steepest-ascent step: ``x_adv + step_size * direction / ||direction||_2``.

    Per sample, (B, ...) -> (B, ...); a sample whose direction is all zero does not move.
    """
    return x_adv + step_size * l2_normalise(direction)


def l2_project(x_adv: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """Projects ``x_adv`` onto the L2 ``eps``-ball around ``x``, then into [0, 1].

    Each sample's ``delta = x_adv - x`` is scaled by ``min(1, eps / ||delta||_2)``; a sample
    already inside the ball is kept exactly. Clipping to [0, 1] afterwards only shortens
    ``delta`` (``x`` is in [0, 1]), so the result is in both sets. (B, ...) -> (B, ...).
    """
    delta = x_adv - x
    length = per_sample(l2_norm(delta), delta)
    scaled = x + delta * (eps / jnp.maximum(length, eps))
    return clip_box(jnp.where(length <= eps, x_adv, scaled))


def l2_random_start(key: jax.Array, x: jax.Array, eps: jax.Array) -> jax.Array:
    """A uniform random point of the L2 ``eps``-ball around each sample of ``x`` (B, ...),
    clipped to [0, 1].

    The direction is a normalised Gaussian, the radius ``eps * u ** (1 / D)`` with ``u``
    uniform in [0, 1) and ``D`` the number of values per sample.
    """
    direction_key, radius_key = jax.random.split(key)
    direction = l2_normalise(jax.random.normal(direction_key, x.shape, x.dtype))
    dims = max(math.prod(x.shape[1:]), 1)
    radius = eps * jax.random.uniform(radius_key, x.shape[:1], x.dtype) ** (1.0 / dims)
    return clip_box(x + per_sample(radius, x) * direction)
