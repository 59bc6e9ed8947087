"""VGG (torchvision's ``VGG`` + ``make_layers``), NHWC, one generic module.

Submodules are named after torchvision's module paths with ``.`` replaced by ``_``
(``features_0``, ``classifier_6``), which is what makes weight import mechanical.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxlogit.models import _conv, _layers

MAX_POOL = "M"
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG: 3x3 conv stacks and 2x2 max-pools, adaptive average pool, 3-layer MLP head.

    Attributes:
        config: conv widths, with ``"M"`` for a 2x2/2 max-pool (torchvision's ``cfgs``).
        batch_norm: put a BatchNorm after every conv (``vgg16_bn``).
        num_classes: number of logits.
        pool_size: output (h, w) of the adaptive average pool before the head.
        hidden: width of the two hidden Dense layers.
        dropout: dropout rate in the head (train mode only).
        conv: the convolution layer class (``FastConv`` or ``PlainConv``, same variables);
            None: :func:`jaxlogit.backend.conv_layers` chooses.
        max_pool: ``(x, kernel, stride, padding) -> pooled``; None: the backend's choice.
    """

    config: Sequence[int | str]
    batch_norm: bool = False
    num_classes: int = 1000
    pool_size: tuple[int, int] = (7, 7)
    hidden: int = 4096
    dropout: float = 0.5
    conv: type[_conv.FastConv] | None = None
    max_pool: Callable | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Normalised images (B, H, W, C) -> logits (B, num_classes)."""
        x = self._features(x, train)
        x = _layers.adaptive_avg_pool(x, self.pool_size)
        # Flattened in (h, w, c) order; torch flattens (c, h, w): the import permutes classifier_0.
        x = x.reshape((x.shape[0], math.prod(x.shape[1:])))
        for index in (0, 3):
            x = nn.relu(nn.Dense(self.hidden, name=f"classifier_{index}")(x))
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="classifier_6")(x)

    def _features(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        conv_layer, max_pool = _layers.conv_layers(self.conv, self.max_pool)
        index = 0  # torchvision's index in the ``features`` Sequential
        for item in self.config:
            if item == MAX_POOL:
                x = max_pool(x, 2, 2)
                index += 1
                continue
            x = _layers.conv(item, 3, padding=1, bias=True, name=f"features_{index}", layer=conv_layer)(x)
            index += 1
            if self.batch_norm:
                x = _layers.batch_norm(train, name=f"features_{index}")(x)
                index += 1
            x = nn.relu(x)
            index += 1
        return x


vgg16 = functools.partial(VGG, config=VGG16_CONFIG, batch_norm=False)
vgg16_bn = functools.partial(VGG, config=VGG16_CONFIG, batch_norm=True)
# Fashion-MNIST 28x28 -> 14 -> 7 -> 3: the pool keeps the 3x3 map, the head is small.
vgg_compact = functools.partial(
    VGG,
    config=(16, "M", 32, 32, "M", 64, 64, "M"),
    batch_norm=True,
    pool_size=(3, 3),
    hidden=128,
    dropout=0.2,
    num_classes=10,
)
vgg_tiny = functools.partial(
    VGG, config=(4, "M", 8, "M"), batch_norm=True, pool_size=(2, 2), hidden=16, num_classes=10
)  # for tests only


def torch_flattened_linear_to_kernel(weight, pool_size: tuple[int, int]):
    """torch's first classifier weight (out, C*h*w) -> flax kernel (h*w*C, out).

    torch flattens the pooled (C, h, w) map, NHWC flattens (h, w, C): the rows are permuted.
    """
    height, width = pool_size
    out_features, in_features = weight.shape
    channels = in_features // (height * width)
    weight = weight.reshape(out_features, channels, height, width)
    return weight.transpose(2, 3, 1, 0).reshape(height * width * channels, out_features)
