"""DenseNet-BC (torchvision's ``DenseNet``), NHWC, one generic module.

Submodules are named after torchvision's module paths with ``.`` replaced by ``_``
(``features_denseblock1`` > ``denselayer1`` > ``norm1``), which makes weight import mechanical.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxlogit.models import _conv, _layers


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bn_size*growth) - BN-ReLU-3x3 conv: (B,H,W,C) -> new (B,H,W,growth)."""

    growth_rate: int
    bn_size: int
    conv: type[_conv.FastConv] = _conv.FastConv

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.relu(_layers.batch_norm(train, name="norm1")(x))
        x = _layers.conv(self.bn_size * self.growth_rate, 1, name="conv1", layer=self.conv)(x)
        x = nn.relu(_layers.batch_norm(train, name="norm2")(x))
        return _layers.conv(self.growth_rate, 3, padding=1, name="conv2", layer=self.conv)(x)


class DenseBlock(nn.Module):
    """``num_layers`` dense layers, each fed all previous features: C -> C + n*growth channels."""

    num_layers: int
    growth_rate: int
    bn_size: int
    conv: type[_conv.FastConv] = _conv.FastConv

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for index in range(self.num_layers):
            layer = DenseLayer(self.growth_rate, self.bn_size, conv=self.conv, name=f"denselayer{index + 1}")
            x = jnp.concatenate([x, layer(x, train)], axis=-1)
        return x


class Transition(nn.Module):
    """BN-ReLU-1x1 conv-2x2 avg-pool: (B,H,W,C) -> (B,H/2,W/2,features)."""

    features: int
    conv: type[_conv.FastConv] = _conv.FastConv

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = nn.relu(_layers.batch_norm(train, name="norm")(x))
        x = _layers.conv(self.features, 1, name="conv", layer=self.conv)(x)
        return _layers.avg_pool(x, 2, 2)


class DenseNet(nn.Module):
    """DenseNet: stem, dense blocks joined by halving transitions, BN-ReLU, pool, linear head.

    Attributes:
        growth_rate: channels each dense layer adds (``k``).
        block_config: number of layers in each dense block.
        num_init_features: channels of the stem conv.
        bn_size: the 1x1 bottleneck has ``bn_size * growth_rate`` channels.
        num_classes: number of logits.
        small_stem: a 3x3/1 stem conv + 2x2/2 max-pool (small images) instead of
            torchvision's 7x7/2 conv + 3x3/2 max-pool.
        conv: the convolution layer class (``FastConv`` or ``PlainConv``, same variables);
            None: :func:`jaxlogit.backend.conv_layers` chooses.
        max_pool: ``(x, kernel, stride, padding) -> pooled``; None: the backend's choice.
    """

    growth_rate: int = 32
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 1000
    small_stem: bool = False
    conv: type[_conv.FastConv] | None = None
    max_pool: Callable | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Normalised images (B, H, W, C) -> logits (B, num_classes)."""
        conv_layer, max_pool = _layers.conv_layers(self.conv, self.max_pool)
        x = self._stem(x, train, conv_layer, max_pool)
        features = self.num_init_features
        for index, num_layers in enumerate(self.block_config):
            x = DenseBlock(
                num_layers,
                self.growth_rate,
                self.bn_size,
                conv=conv_layer,
                name=f"features_denseblock{index + 1}",
            )(x, train)
            features += num_layers * self.growth_rate
            if index != len(self.block_config) - 1:
                features //= 2
                x = Transition(features, conv=conv_layer, name=f"features_transition{index + 1}")(x, train)
        x = nn.relu(_layers.batch_norm(train, name="features_norm5")(x))
        return nn.Dense(self.num_classes, name="classifier")(_layers.global_avg_pool(x))

    def _stem(
        self, x: jnp.ndarray, train: bool, conv_layer: type[_conv.FastConv], max_pool: Callable
    ) -> jnp.ndarray:
        if self.small_stem:
            x = _layers.conv(self.num_init_features, 3, padding=1, name="features_conv0", layer=conv_layer)(x)
        else:
            x = _layers.conv(
                self.num_init_features, 7, stride=2, padding=3, name="features_conv0", layer=conv_layer
            )(x)
        x = nn.relu(_layers.batch_norm(train, name="features_norm0")(x))
        if self.small_stem:
            return max_pool(x, 2, 2)
        return max_pool(x, 3, 2, padding=1)


densenet121 = functools.partial(DenseNet, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64)
# Fashion-MNIST: 28x28 stem, dense blocks at 14x14, 7x7, 3x3.
densenet_compact = functools.partial(
    DenseNet,
    growth_rate=12,
    block_config=(2, 3, 3),
    num_init_features=24,
    bn_size=4,
    small_stem=True,
    num_classes=10,
)
densenet_tiny = functools.partial(
    DenseNet,
    growth_rate=4,
    block_config=(1, 1),
    num_init_features=8,
    bn_size=2,
    small_stem=True,
    num_classes=10,
)  # for tests only
