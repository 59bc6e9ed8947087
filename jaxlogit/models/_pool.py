"""torch's ``MaxPool2d`` in NHWC, with gradients that XLA:CPU computes cheaply.

``nn.max_pool``'s gradient is a ``select_and_scatter``, which XLA:CPU expands into an
index-tracking reduce-window plus a scatter; autodiff of a chain of ``jnp.maximum`` instead makes
XLA recompute the chain inside every fused consumer. Here the gradient is written out: one pass
marks, as bits, which window taps hold the maximum, and one pass sends each output's gradient to
those taps. ``python -m benchmarks.bench_conv_grad`` times both on ResNet-50's stem pool, alone
and inside a whole PGD step.

At exact ties within a window the gradient is split equally between the tied inputs (torch
gives it to one of them); either is a valid subgradient, and after a ReLU the only likely ties,
zeros, get no gradient through the ReLU anyway.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxlogit.models import _conv

MAX_TAPS = 31  # window taps are bits of one int32


def pooled_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a floor-mode pool along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _pool_forward(x: jnp.ndarray, kernel: int, stride: int, padding: int):
    """(pooled (B,h,w,C), -inf padded input (B,H+2p,W+2p,C))."""
    if kernel * kernel > MAX_TAPS:
        raise ValueError(
            f"max_pool_windows supports kernels up to 5x5, got {kernel}x{kernel}; "
            "use flax.linen.max_pool for larger windows"
        )
    _, height, width, _ = x.shape
    out_size = (pooled_size(height, kernel, stride, padding), pooled_size(width, kernel, stride, padding))
    pads = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    padded = jnp.pad(x, pads, constant_values=-jnp.inf)
    views = _conv.window_taps(padded, (kernel, kernel), (stride, stride), out_size)
    pooled = functools.reduce(jnp.maximum, views)
    return pooled, padded


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool_windows(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0) -> jnp.ndarray:
    """torch's ``MaxPool2d(kernel, stride, padding)`` (floor mode, -inf padding):
    (B,H,W,C) -> (B,h,w,C) with ``h = (H + 2*padding - kernel) // stride + 1``.

    Needs ``kernel**2 <= 31``.
    """
    return _pool_forward(x, kernel, stride, padding)[0]


def _max_pool_fwd(x, kernel, stride, padding):
    pooled, padded = _pool_forward(x, kernel, stride, padding)
    return pooled, (pooled, padded)


def _max_pool_bwd(kernel, stride, padding, residuals, grad):
    # The barrier keeps XLA from recomputing the pooled maxima inside each consumer.
    pooled, padded = lax.optimization_barrier(residuals)
    views = _conv.window_taps(padded, (kernel, kernel), (stride, stride), pooled.shape[1:3])
    hits = [jnp.where(view == pooled, jnp.int32(1 << tap), jnp.int32(0)) for tap, view in enumerate(views)]
    bits = lax.optimization_barrier(functools.reduce(jnp.bitwise_or, hits))
    share = grad / lax.population_count(bits).astype(grad.dtype)
    zero = jnp.zeros((), grad.dtype)
    total = _conv.col2im(
        lambda row, col: jnp.where((bits >> (row * kernel + col)) & 1 == 1, share, zero),
        (kernel, kernel),
        (stride, stride),
    )
    _, padded_h, padded_w, _ = padded.shape
    in_size = (padded_h - 2 * padding, padded_w - 2 * padding)
    return (_conv.fit(total, (padding, padding), in_size),)


max_pool_windows.defvjp(_max_pool_fwd, _max_pool_bwd)


def select_and_scatter_max_pool(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0) -> jnp.ndarray:
    """``nn.max_pool`` with torch's padding (differentiated by ``select_and_scatter``):
    (B,H,W,C) -> (B,h,w,C)."""
    pads = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=pads)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """torch's ``MaxPool2d(2, 2)`` on (B,H,W,C) -> (B,H//2,W//2,C) as a reshape and a max.

    Odd trailing rows/columns are dropped (floor mode). Non-overlapping windows: the reshape's
    ``max`` gradient is already cheap.
    """
    batch, height, width, channels = x.shape
    x = x[:, : height - height % 2, : width - width % 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def max_pool(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0) -> jnp.ndarray:
    """torch's ``MaxPool2d(kernel, stride, padding)`` (floor mode, -inf padding) on (B,H,W,C)."""
    if kernel == stride == 2 and padding == 0:
        return max_pool_2x2(x)
    if kernel * kernel > MAX_TAPS:
        return select_and_scatter_max_pool(x, kernel, stride, padding)
    return max_pool_windows(x, kernel, stride, padding)
