"""ResNet v1.5 (torchvision's ``ResNet``: stride on the 3x3 conv), NHWC, one generic module.

Submodules are named after torchvision's module paths with ``.`` replaced by ``_``
(``layer1_0``, ``downsample_0``), which is what makes weight import mechanical.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxlogit.models import _conv, _layers


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection: (B,H,W,C) -> (B,H/s,W/s,planes)."""

    planes: int
    stride: int = 1
    conv: type[_conv.FastConv] = _conv.FastConv
    expansion: ClassVar[int] = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        conv = functools.partial(_layers.conv, layer=self.conv)
        y = conv(self.planes, 3, stride=self.stride, padding=1, name="conv1")(x)
        y = nn.relu(_layers.batch_norm(train, name="bn1")(y))
        y = conv(self.planes, 3, padding=1, name="conv2")(y)
        y = _layers.batch_norm(train, name="bn2")(y)
        return nn.relu(y + _shortcut(x, self.planes * self.expansion, self.stride, train, self.conv))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convs, residual: (B,H,W,C) -> (B,H/s,W/s,4*planes)."""

    planes: int
    stride: int = 1
    conv: type[_conv.FastConv] = _conv.FastConv
    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        conv = functools.partial(_layers.conv, layer=self.conv)
        y = conv(self.planes, 1, name="conv1")(x)
        y = nn.relu(_layers.batch_norm(train, name="bn1")(y))
        y = conv(self.planes, 3, stride=self.stride, padding=1, name="conv2")(y)
        y = nn.relu(_layers.batch_norm(train, name="bn2")(y))
        y = conv(self.planes * self.expansion, 1, name="conv3")(y)
        y = _layers.batch_norm(train, name="bn3")(y)
        return nn.relu(y + _shortcut(x, self.planes * self.expansion, self.stride, train, self.conv))


def _shortcut(
    x: jnp.ndarray, features: int, stride: int, train: bool, conv: type[_conv.FastConv]
) -> jnp.ndarray:
    """Identity, or torchvision's ``downsample`` (1x1 strided conv + BN) when shapes change.

    Called inside a block's compact ``__call__``, so its layers belong to that block.
    """
    if stride == 1 and x.shape[-1] == features:
        return x
    x = _layers.conv(features, 1, stride=stride, name="downsample_0", layer=conv)(x)
    return _layers.batch_norm(train, name="downsample_1")(x)


class ResNet(nn.Module):
    """ResNet: stem, stages of residual blocks, global average pool, linear head.

    Attributes:
        stage_sizes: number of blocks in each stage (``layer1``, ``layer2``, ...).
        block_cls: ``BasicBlock`` or ``Bottleneck``.
        num_classes: number of logits.
        widths: ``planes`` of each stage (a Bottleneck outputs 4x that).
        stage_strides: stride of each stage's first block.
        stem_width: channels of the stem conv.
        small_stem: a 3x3/1 stem conv without max-pool (small images) instead of
            torchvision's 7x7/2 conv + 3x3/2 max-pool.
        conv: the convolution layer class (``FastConv`` or ``PlainConv``, same variables);
            None: :func:`jaxlogit.backend.conv_layers` chooses.
        max_pool: ``(x, kernel, stride, padding) -> pooled``; None: the backend's choice.
    """

    stage_sizes: Sequence[int]
    block_cls: type[nn.Module]
    num_classes: int = 1000
    widths: Sequence[int] = (64, 128, 256, 512)
    stage_strides: Sequence[int] = (1, 2, 2, 2)
    stem_width: int = 64
    small_stem: bool = False
    conv: type[_conv.FastConv] | None = None
    max_pool: Callable | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Normalised images (B, H, W, C) -> logits (B, num_classes)."""
        conv_layer, max_pool = _layers.conv_layers(self.conv, self.max_pool)
        conv = functools.partial(_layers.conv, layer=conv_layer)
        if self.small_stem:
            x = conv(self.stem_width, 3, padding=1, name="conv1")(x)
        else:
            x = conv(self.stem_width, 7, stride=2, padding=3, name="conv1")(x)
        x = nn.relu(_layers.batch_norm(train, name="bn1")(x))
        if not self.small_stem:
            x = max_pool(x, 3, 2, padding=1)
        for stage, (size, width, stride) in enumerate(zip(self.stage_sizes, self.widths, self.stage_strides)):
            for block in range(size):
                x = self.block_cls(
                    width, stride if block == 0 else 1, conv=conv_layer, name=f"layer{stage + 1}_{block}"
                )(x, train)
        return nn.Dense(self.num_classes, name="fc")(_layers.global_avg_pool(x))


resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
# Fashion-MNIST: 28x28 stem, then stages at 14x14, 7x7, 4x4 (a ResNet-14 of basic blocks).
resnet_compact = functools.partial(
    ResNet,
    stage_sizes=(2, 2, 2),
    block_cls=BasicBlock,
    widths=(16, 32, 64),
    stage_strides=(2, 2, 2),
    stem_width=16,
    small_stem=True,
    num_classes=10,
)
resnet_tiny = functools.partial(
    ResNet,
    stage_sizes=(1, 1),
    block_cls=BasicBlock,
    widths=(4, 8),
    stage_strides=(2, 2),
    stem_width=4,
    small_stem=True,
    num_classes=10,
)  # for tests only
