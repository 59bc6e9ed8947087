"""The model zoo: names, their specs (input shape, classes, normalisation) and constructors.

A backbone is either ``data.IMAGENET`` (torchvision's, 224x224x3) or ``data.COMPACT`` (trained here
on whichever dataset uses compact backbones); its input shape, classes and normalisation come
from a dataset in ``jaxlogit.data``'s registry: ``spec(name)`` from its default dataset,
``spec(name, dataset=...)`` from another one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlogit import backend, data
from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _densenet, _resnet, _vgg

# The dataset whose images and classes a backbone kind takes by default (``spec(name)``).
_KIND_DEFAULT_DATASET = {data.COMPACT: data.DEFAULT_DATASET, data.IMAGENET: "imagenet"}


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
        kind: ``data.COMPACT`` or ``data.IMAGENET``: the datasets it takes are those whose
            ``DatasetSpec.backbones`` equals it.
    """

    name: str
    family: str
    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    kind: str = data.COMPACT


def _for_dataset(model_spec: ModelSpec, dataset: str) -> ModelSpec:
    """``model_spec`` taking ``dataset``'s images (shape, normalisation) and predicting its classes."""
    ds = data.get(dataset)
    return model_spec._replace(
        input_shape=tuple(ds.image_shape), num_classes=ds.num_classes, mean=tuple(ds.mean), std=tuple(ds.std)
    )


def _of_kind(name: str, family: str, description: str, kind: str) -> ModelSpec:
    """The spec of a ``kind`` backbone on its kind's default dataset."""
    model_spec = ModelSpec(name, family, (0, 0, 0), 0, (), (), description, kind)
    return _for_dataset(model_spec, _KIND_DEFAULT_DATASET[kind])


def _imagenet(name: str, family: str, description: str) -> ModelSpec:
    return _of_kind(name, family, description, data.IMAGENET)


def _fashion(name: str, family: str, description: str) -> ModelSpec:
    return _of_kind(name, family, description, data.COMPACT)


_ZOO: dict[str, tuple[ModelSpec, Callable[..., nn.Module]]] = {
    "vgg16": (_imagenet("vgg16", "vgg", "torchvision VGG-16 (ImageNet, 138M params)"), _vgg.vgg16),
    "vgg16_bn": (_imagenet("vgg16_bn", "vgg", "torchvision VGG-16 with BatchNorm (ImageNet)"), _vgg.vgg16_bn),
    "resnet50": (_imagenet("resnet50", "resnet", "torchvision ResNet-50 v1.5 (ImageNet)"), _resnet.resnet50),
    "densenet121": (
        _imagenet("densenet121", "densenet", "torchvision DenseNet-121 (ImageNet)"),
        _densenet.densenet121,
    ),
    "vgg_compact": (
        _fashion("vgg_compact", "vgg", "VGG-BN 16-32-64, 5 convs (Fashion-MNIST)"),
        _vgg.vgg_compact,
    ),
    "resnet_compact": (
        _fashion("resnet_compact", "resnet", "ResNet-14, basic blocks 16/32/64 (Fashion-MNIST)"),
        _resnet.resnet_compact,
    ),
    "densenet_compact": (
        _fashion("densenet_compact", "densenet", "DenseNet-BC, growth 12, blocks 2-3-3 (Fashion-MNIST)"),
        _densenet.densenet_compact,
    ),
}
_TEST_ONLY: dict[str, tuple[ModelSpec, Callable[..., nn.Module]]] = {
    f"{family}_tiny": (_fashion(f"{family}_tiny", family, "a few hundred FLOPs, for tests only"), factory)
    for family, factory in (
        ("vgg", _vgg.vgg_tiny),
        ("resnet", _resnet.resnet_tiny),
        ("densenet", _densenet.densenet_tiny),
    )
}


def names(*, include_test_only: bool = False, dataset: str | None = None) -> list[str]:
    """The registered model names (the ``*_tiny`` test models only if asked).

    Args:
      include_test_only: also list the ``*_tiny`` test models.
      dataset: only the backbones that take this dataset (``data.get(dataset).backbones``).
    """
    listed = list(_ZOO) + (list(_TEST_ONLY) if include_test_only else [])
    if dataset is None:
        return listed
    kind = data.get(dataset).backbones
    return [name for name in listed if _entry(name)[0].kind == kind]


def _entry(name: str) -> tuple[ModelSpec, Callable[..., nn.Module]]:
    entry = _ZOO.get(name) or _TEST_ONLY.get(name)
    if entry is None:
        raise JaxlogitError(f"unknown model {name!r}: choose one of {', '.join(_ZOO)}")
    return entry


def spec(name: str, dataset: str | None = None) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name``, on ``dataset`` if given.

    Args:
      name: a name from ``names()``.
      dataset: a registered dataset the backbone takes: the spec's input shape, classes and
        normalisation are then that dataset's. ``None``: the backbone's default dataset
        (Fashion-MNIST for the compact archs, ImageNet for the others).

    Raises:
      JaxlogitError: unknown model or dataset, or a dataset that uses the other kind of backbone.
    """
    model_spec = _entry(name)[0]
    if dataset is None:
        return model_spec
    if data.get(dataset).backbones != model_spec.kind:
        raise JaxlogitError(
            f"model {name!r} does not take {dataset} images: choose one of "
            f"{', '.join(names(dataset=dataset))}"
        )
    return _for_dataset(model_spec, dataset)


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
    return factory(num_classes=model_spec.num_classes if num_classes is None else num_classes, **layers)


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
