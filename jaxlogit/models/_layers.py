"""Layers shared by the backbone families, with torchvision's exact semantics.

Everything is NHWC. Convolutions use explicit symmetric padding (torch's ``padding=p``), never
``"SAME"``, whose stride-2 padding is asymmetric and would not match torchvision weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxlogit import backend
from jaxlogit.models._conv import KAIMING_FAN_OUT, FastConv

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # flax's decay of the running stats == torch's momentum 0.1


def conv(
    features: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int = 0,
    bias: bool = False,
    name: str | None = None,
    layer: type[FastConv] = FastConv,
) -> FastConv:
    """A torch-style ``Conv2d(in, features, kernel, stride, padding, bias)`` in NHWC, as
    ``layer`` (``FastConv`` or ``PlainConv``: same variables)."""
    return layer(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        use_bias=bias,
        kernel_init=KAIMING_FAN_OUT,
        name=name,
    )


def conv_layers(
    conv_layer: type[FastConv] | None, max_pool: Callable | None
) -> tuple[type[FastConv], Callable]:
    """A backbone's ``(conv, max_pool)`` fields, each None filled in by
    :func:`jaxlogit.backend.conv_layers` (the backend's choice)."""
    if conv_layer is None or max_pool is None:
        chosen_conv, chosen_pool = backend.conv_layers()
        return conv_layer or chosen_conv, max_pool or chosen_pool
    return conv_layer, max_pool


def batch_norm(train: bool, *, name: str | None = None) -> nn.BatchNorm:
    """torch's ``BatchNorm2d`` (eps 1e-5, momentum 0.1); eval mode uses the running stats."""
    return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def avg_pool(x: jnp.ndarray, kernel: int, stride: int) -> jnp.ndarray:
    """torch's ``AvgPool2d(kernel, stride)`` without padding (floor mode) on (B,H,W,C)."""
    return nn.avg_pool(x, (kernel, kernel), strides=(stride, stride), padding="VALID")


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    """``AdaptiveAvgPool2d((1, 1))`` followed by ``flatten``: (B,H,W,C) -> (B,C)."""
    return jnp.mean(x, axis=(1, 2))


@functools.cache
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
