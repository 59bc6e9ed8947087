"""The model zoo: names, their specs (input shape, classes, normalisation) and constructors."""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlogit import backend
from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _densenet, _resnet, _vgg

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
IMAGENET_SHAPE = (224, 224, 3)
FASHION_MNIST_SHAPE = (28, 28, 1)


class ModelSpec(NamedTuple):
    """What a backbone expects and produces.

    Attributes:
        name: registry name, e.g. ``"resnet50"``.
        family: ``"vgg"``, ``"resnet"`` or ``"densenet"``.
        input_shape: (H, W, C) of one image.
        num_classes: number of logits by default.
        mean: per-channel mean (C,) subtracted from [0, 1] images.
        std: per-channel std (C,) dividing them.
        description: one line for humans.
    """

    name: str
    family: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str


def _imagenet(name: str, family: str, description: str) -> ModelSpec:
    return ModelSpec(name, family, IMAGENET_SHAPE, 1000, IMAGENET_MEAN, IMAGENET_STD, description)


def _fashion(name: str, family: str, description: str) -> ModelSpec:
    return ModelSpec(name, family, FASHION_MNIST_SHAPE, 10, FASHION_MNIST_MEAN,
                     FASHION_MNIST_STD, description)


_ZOO: dict[str, tuple[ModelSpec, Callable[..., nn.Module]]] = {
    "vgg16": (_imagenet("vgg16", "vgg", "torchvision VGG-16 (ImageNet, 138M params)"),
              _vgg.vgg16),
    "vgg16_bn": (_imagenet("vgg16_bn", "vgg", "torchvision VGG-16 with BatchNorm (ImageNet)"),
                 _vgg.vgg16_bn),
    "resnet50": (_imagenet("resnet50", "resnet", "torchvision ResNet-50 v1.5 (ImageNet)"),
                 _resnet.resnet50),
    "densenet121": (_imagenet("densenet121", "densenet", "torchvision DenseNet-121 (ImageNet)"),
                    _densenet.densenet121),
    "vgg_compact": (_fashion("vgg_compact", "vgg", "VGG-BN 16-32-64, 5 convs (Fashion-MNIST)"),
                    _vgg.vgg_compact),
    "resnet_compact": (_fashion("resnet_compact", "resnet",
                                "ResNet-14, basic blocks 16/32/64 (Fashion-MNIST)"),
                       _resnet.resnet_compact),
    "densenet_compact": (_fashion("densenet_compact", "densenet",
                                  "DenseNet-BC, growth 12, blocks 2-3-3 (Fashion-MNIST)"),
                         _densenet.densenet_compact),
}
_TEST_ONLY: dict[str, tuple[ModelSpec, Callable[..., nn.Module]]] = {
    f"{family}_tiny": (_fashion(f"{family}_tiny", family, "a few hundred FLOPs, for tests only"),
                       factory)
    for family, factory in (("vgg", _vgg.vgg_tiny), ("resnet", _resnet.resnet_tiny),
                            ("densenet", _densenet.densenet_tiny))
}


def names(*, include_test_only: bool = False) -> list[str]:
    """The registered model names (the ``*_tiny`` test models only if asked)."""
    listed = list(_ZOO)
    return listed + list(_TEST_ONLY) if include_test_only else listed


def _entry(name: str) -> tuple[ModelSpec, Callable[..., nn.Module]]:
    entry = _ZOO.get(name) or _TEST_ONLY.get(name)
    if entry is None:
        raise JaxlogitError(f"unknown model {name!r}: choose one of {', '.join(_ZOO)}")
    return entry


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name``; unknown names raise ``JaxlogitError``."""
    return _entry(name)[0]


def create(name: str, num_classes: int | None = None, *, conv: str | None = None) -> nn.Module:
    """A fresh flax module for ``name`` with ``num_classes`` logits (default: the spec's).

    Args:
      conv: ``"cpu"`` or ``"plain"`` fixes the convolution and max-pool
        (:func:`jaxlogit.backend.conv_path`); None leaves the choice to the backend the module
        runs on. Either way the variables are the same.
    """
    model_spec, factory = _entry(name)
    layers = {}
    if conv is not None:
        layers = dict(zip(("conv", "max_pool"), backend.conv_layers(conv)))
    return factory(num_classes=model_spec.num_classes if num_classes is None else num_classes,
                   **layers)


def init(module: nn.Module, key: jax.Array, input_shape: tuple[int, int, int]) -> dict:
    """Random variables of ``module`` for images of ``input_shape`` (H, W, C).

    Returns:
        ``{"params": ..., "batch_stats": ...}`` (no ``batch_stats`` without BatchNorm).
    """
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # a raw uint32 PRNGKey
        key = jax.random.wrap_key_data(key)
    return dict(_compiled_init(module, tuple(input_shape))(key))


@functools.lru_cache(maxsize=32)
def _compiled_init(module: nn.Module, input_shape: tuple[int, ...]) -> Callable:
    """``key -> variables``, compiled once per (module, shape), on CPU without LLVM optimisation.

    Init runs once, but on CPU XLA's optimiser spends ~10 s compiling the threefry random
    bits of even a tiny model; unoptimised it takes ~1 s (values equal up to float32 ulps).
    Other backends compile it with their defaults.
    """
    def init_fn(key):
        return module.init({"params": key}, jnp.zeros((1, *input_shape), jnp.float32))

    lowered = jax.jit(init_fn).lower(jax.random.key(0))
    if not backend.on_cpu():
        return lowered.compile()
    return lowered.compile({"xla_backend_optimization_level": 0})


def variable_shapes(module: nn.Module, input_shape: tuple[int, int, int]) -> dict:
    """Like :func:`init` but only shapes (``jax.ShapeDtypeStruct`` leaves); costs no FLOPs."""
    dummy = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return dict(jax.eval_shape(lambda x: module.init({"params": jax.random.key(0)}, x), dummy))
