"""``benchmarks.bench_conv_layers``: it finds every convolution of a backbone with the shapes the
backbone really runs, and its layer loops really compute the convolution."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bench_conv_layers
from jaxlogit import models
from jaxlogit.models import _conv, _registry


def _param_kernels(arch: str) -> collections.Counter:
    """Shapes of every 4-d ``kernel`` in the backbone's parameters, with their counts."""
    module = models.create(arch)
    shapes = _registry.variable_shapes(module, models.spec(arch).input_shape)
    leaves = jax.tree_util.tree_leaves_with_path(shapes["params"])
    return collections.Counter(
        tuple(leaf.shape) for path, leaf in leaves if str(path[-1].key) == "kernel" and len(leaf.shape) == 4
    )


@pytest.mark.parametrize("arch", ["resnet_tiny", "vgg_tiny", "densenet_tiny"])
def test_conv_layers_finds_every_convolution_once(arch):
    layers = bench_conv_layers.conv_layers(arch, 3)
    found = collections.Counter()
    for layer, count in layers.items():
        found[layer.kernel_shape] += count
        assert layer.in_shape[0] == 3
        assert layer.in_shape[-1] == layer.kernel_shape[2]
    assert found == _param_kernels(arch)


@pytest.mark.parametrize("arch", ["resnet_tiny", "densenet_tiny"])
def test_conv_layer_out_shape_is_the_convolutions(arch):
    strides = set()
    for layer in bench_conv_layers.conv_layers(arch, 2):
        out = jax.eval_shape(
            lambda x, w, layer=layer: _conv.conv(x, w, layer.strides, layer.padding),
            jax.ShapeDtypeStruct(layer.in_shape, jnp.float32),
            jax.ShapeDtypeStruct(layer.kernel_shape, jnp.float32),
        )
        assert layer.out_shape() == out.shape
        strides.add(layer.strides)
    if arch == "resnet_tiny":
        assert (2, 2) in strides  # the strided case is covered


def test_fold_tiles_channels_and_zero_pads_rows():
    y = jnp.arange(2 * 3 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 3, 2)
    folded = np.asarray(bench_conv_layers.fold(y, (2, 5, 4, 5)))
    assert folded.shape == (2, 5, 4, 5)
    np.testing.assert_array_equal(folded[:, :3, :3, :2], y)
    np.testing.assert_array_equal(folded[:, :3, :3, 4], y[..., 0])
    assert not folded[:, 3:].any() and not folded[:, :, 3:].any()


@pytest.mark.parametrize("gradient", [False, True])
def test_layer_loop_depends_on_the_kernel_only_with_the_convolution(gradient):
    layer = bench_conv_layers.ConvLayer((2, 6, 6, 3), (3, 3, 3, 4), (2, 2), ((1, 1), (1, 1)))
    x = jax.random.normal(jax.random.key(0), layer.in_shape)
    kernel = jax.random.normal(jax.random.key(1), layer.kernel_shape)
    other = kernel.at[1, 1, 0, 0].add(1.0)  # leaves kernel[0, 0, 0, 0] (the rest loop's) as is
    runs = {}
    for with_conv in (True, False):
        loop = jax.jit(bench_conv_layers.layer_loop(layer, gradient=gradient, with_conv=with_conv))
        runs[with_conv] = [np.asarray(loop(x, w)) for w in (kernel, other)]
    changed = np.abs(runs[True][0] - runs[True][1]).max() / np.abs(runs[True][0]).max()
    assert changed > 1e-3
    np.testing.assert_array_equal(runs[False][0], runs[False][1])
