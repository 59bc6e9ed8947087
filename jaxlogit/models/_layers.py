"""Layers shared by the backbone families, with torchvision's exact semantics.

Everything is NHWC. Convolutions use explicit symmetric padding (torch's ``padding=p``), never
``"SAME"``, whose stride-2 padding is asymmetric and would not match torchvision weights.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # flax's decay of the running stats == torch's momentum 0.1

# torchvision's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` for convolutions.
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


# Image, kernel and output layouts of every convolution here.
CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")

Padding = tuple[tuple[int, int], tuple[int, int]]


def _conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: Padding,
          lhs_dilation: tuple[int, int] = (1, 1)) -> jnp.ndarray:
    """Cross-correlation of (B,H,W,I) with (kh,kw,I,O) -> (B,H',W',O)."""
    return lax.conv_general_dilated(x, kernel, strides, padding, lhs_dilation=lhs_dilation,
                                    dimension_numbers=CONV_DIMENSIONS)


def _input_grad_padding(in_size: int, out_size: int, kernel: int, stride: int,
                        padding: tuple[int, int]) -> tuple[int, int]:
    """Padding of the stride-dilated output gradient that yields the input gradient along one axis.

    Forward: ``y[o] = sum_k x[o*stride + k - lo] w[k]``. Dilating ``g`` by ``stride`` and
    correlating with the flipped kernel gives ``dx[i]`` with low padding ``kernel - 1 - lo``
    and high padding chosen so the result has ``in_size`` entries (negative pads crop).
    """
    low = kernel - 1 - padding[0]
    dilated = (out_size - 1) * stride + 1
    return low, in_size + kernel - 1 - dilated - low


def _conv_input_grad(grad: jnp.ndarray, kernel: jnp.ndarray, in_shape: Sequence[int],
                     strides: tuple[int, int], padding: Padding) -> jnp.ndarray:
    """Gradient (B,H',W',O) w.r.t. the conv's input (B,H,W,I), as one explicit convolution.

    The flipped, in/out-swapped kernel sits behind ``optimization_barrier`` so XLA:CPU lays it
    out once instead of falling back to its slow generic path inside loops (jax#12868).
    """
    flipped = lax.optimization_barrier(jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    pads = tuple(_input_grad_padding(in_shape[axis + 1], grad.shape[axis + 1],
                                     kernel.shape[axis], strides[axis], padding[axis])
                 for axis in (0, 1))
    return _conv(grad, flipped, (1, 1), pads, lhs_dilation=strides)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def fast_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int],
              padding: Padding) -> jnp.ndarray:
    """``lax.conv_general_dilated`` in NHWC/HWIO whose VJP is fast inside XLA:CPU loops.

    Args:
        x: (B, H, W, I) images.
        kernel: (kh, kw, I, O) weights.
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)), explicit ints.

    Returns:
        (B, H', W', O), exactly the plain convolution; only the backward pass differs.
    """
    return _conv(x, kernel, strides, padding)


def _fast_conv_fwd(x, kernel, strides, padding):
    return _conv(x, kernel, strides, padding), (x, kernel)


def _fast_conv_bwd(strides, padding, residuals, grad):
    x, kernel = residuals
    _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, strides, padding), kernel)
    return _conv_input_grad(grad, kernel, x.shape, strides, padding), kernel_vjp(grad)[0]


fast_conv.defvjp(_fast_conv_fwd, _fast_conv_bwd)


class FastConv(nn.Module):
    """Drop-in for ``nn.Conv`` (explicit padding, no groups) built on :func:`fast_conv`.

    Same variables as ``nn.Conv``: ``kernel`` (kh, kw, I, features) and ``bias`` (features,),
    so checkpoints and torchvision imports are interchangeable. (B,H,W,I) -> (B,H',W',features).

    Attributes:
        features: output channels.
        kernel_size: (kh, kw).
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)).
        use_bias: add a learned bias.
        kernel_init, bias_init: initialisers.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = ((0, 0), (0, 0))
    use_bias: bool = True
    kernel_init: Callable = KAIMING_FAN_OUT
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, jnp.float32)
        padding = tuple(tuple(int(p) for p in pair) for pair in self.padding)
        y = fast_conv(x, kernel.astype(x.dtype), tuple(self.strides), padding)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y


def conv(features: int, kernel: int, *, stride: int = 1, padding: int = 0, bias: bool = False,
         name: str | None = None) -> FastConv:
    """A torch-style ``Conv2d(in, features, kernel, stride, padding, bias)`` in NHWC."""
    return FastConv(features, (kernel, kernel), strides=(stride, stride),
                    padding=((padding, padding), (padding, padding)), use_bias=bias,
                    kernel_init=KAIMING_FAN_OUT, name=name)


def batch_norm(train: bool, *, name: str | None = None) -> nn.BatchNorm:
    """torch's ``BatchNorm2d`` (eps 1e-5, momentum 0.1); eval mode uses the running stats."""
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                        epsilon=BN_EPSILON, name=name)


def max_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
    """torch's ``MaxPool2d(2, 2)`` on (B,H,W,C) -> (B,H//2,W//2,C) as a reshape and a max.

    Odd trailing rows/columns are dropped (floor mode). Its gradient is ~10x cheaper on CPU
    than ``nn.max_pool``'s ``select_and_scatter``; at exact ties within a window the gradient
    is split between the tied inputs instead of going to one of them.
    """
    batch, height, width, channels = x.shape
    x = x[:, :height - height % 2, :width - width % 2]
    return x.reshape(batch, height // 2, 2, width // 2, 2, channels).max(axis=(2, 4))


def max_pool(x: jnp.ndarray, kernel: int, stride: int, padding: int = 0) -> jnp.ndarray:
    """torch's ``MaxPool2d(kernel, stride, padding)`` (floor mode, -inf padding) on (B,H,W,C)."""
    if kernel == stride == 2 and padding == 0:
        return max_pool_2x2(x)
    pad = ((padding, padding), (padding, padding))
    return nn.max_pool(x, (kernel, kernel), strides=(stride, stride), padding=pad)


def avg_pool(x: jnp.ndarray, kernel: int, stride: int) -> jnp.ndarray:
    """torch's ``AvgPool2d(kernel, stride)`` without padding (floor mode) on (B,H,W,C)."""
    return nn.avg_pool(x, (kernel, kernel), strides=(stride, stride), padding="VALID")


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    """``AdaptiveAvgPool2d((1, 1))`` followed by ``flatten``: (B,H,W,C) -> (B,C)."""
    return jnp.mean(x, axis=(1, 2))


@functools.lru_cache(maxsize=None)
def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The (out, in) averaging matrix of torch's ``adaptive_avg_pool`` along one axis.

    Output cell ``i`` averages inputs ``floor(i*in/out) <= j < ceil((i+1)*in/out)``; windows
    may overlap (and repeat inputs when ``out > in``).
    """
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = math.ceil((i + 1) * in_size / out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jnp.ndarray, output_size: tuple[int, int]) -> jnp.ndarray:
    """torch's ``AdaptiveAvgPool2d(output_size)`` for any input size: (B,H,W,C) -> (B,h,w,C)."""
    _, height, width, _ = x.shape
    out_h, out_w = output_size
    if (height, width) == (out_h, out_w):
        return x
    rows = jnp.asarray(adaptive_pool_matrix(height, out_h))
    cols = jnp.asarray(adaptive_pool_matrix(width, out_w))
    return jnp.einsum("ih,jw,bhwc->bijc", rows, cols, x)
