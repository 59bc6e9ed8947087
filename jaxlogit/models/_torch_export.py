"""Export the flax backbones to torch: a ``torch.nn.Module`` with the same weights and logits.

The inverse of :func:`jaxlogit.models.from_torchvision`. The ImageNet architectures become the
torchvision model itself; the compact ones become torch mirrors assembled from torch and
torchvision building blocks, with parameter names equal to the torch keys the flax names map
to (``layer1_0`` -> ``layer1.0``), so one state_dict conversion serves every backbone and
``from_torchvision`` reads the mirrors back. torch is imported only when a function needs it.
"""

from __future__ import annotations

import collections
from typing import Any

import flax.traverse_util
import numpy as np

from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _densenet, _registry, _resnet, _torch_import, _vgg


def to_state_dict(name: str, variables: dict) -> dict[str, np.ndarray]:
    """The torchvision-layout ``state_dict`` of flax ``variables`` of model ``name``.

    Args:
        name: a registry name, e.g. ``"resnet_compact"``.
        variables: ``{"params": ..., "batch_stats": ...}`` of ``models.create(name)``.

    Returns:
        torch key -> float32 numpy array: conv (H,W,I,O) -> (O,I,H,W), dense (in,out) ->
        (out,in), BatchNorm scale/bias/mean/var -> weight/bias/running_mean/running_var.
        ``num_batches_tracked`` is not included.
    """
    module = _registry.create(name, _num_classes(variables))
    flat = flax.traverse_util.flatten_dict(dict(variables))
    pool_size = module.pool_size if isinstance(module, _vgg.VGG) else None
    out = {}
    for path, value in flat.items():
        key = _torch_import._torch_key(path)
        array = np.asarray(value, np.float32)
        if key == "classifier.0.weight" and pool_size is not None:
            out[key] = _vgg_first_linear_weight(array, pool_size)
        else:
            out[key] = _to_torch_layout(array, path)
    return out


def to_torch(name: str, variables: dict) -> Any:
    """Model ``name`` as an eval-mode ``torch.nn.Module`` holding ``variables``.

    The module takes NCHW float32 images in [0, 1] (what torchattacks expects) and returns
    logits (B, num_classes): it starts with ``torchvision.transforms.Normalize(spec.mean,
    spec.std)`` (submodule ``normalize``), followed by the backbone (submodule ``backbone``:
    torchvision's model for the ImageNet architectures, a torch mirror for the compact ones).

    Args:
        name: a registry name (``models.names()``, or a ``*_tiny`` test model).
        variables: ``{"params": ..., "batch_stats": ...}`` of ``models.create(name)``; the head
            size is read from them.

    Raises:
        JaxlogitError: torch is missing, or ``variables`` do not fit the architecture.
    """
    torch, torchvision = _import_torch()
    model_spec = _registry.spec(name)
    backbone = _torch_backbone(name, _num_classes(variables), torch, torchvision)
    _load_state_dict(name, backbone, to_state_dict(name, variables), torch)
    normalize = torchvision.transforms.Normalize(model_spec.mean, model_spec.std)
    model = torch.nn.Sequential(collections.OrderedDict(normalize=normalize, backbone=backbone))
    return model.eval()


def _import_torch():
    try:
        import torch
        import torchvision
    except ImportError as err:
        raise JaxlogitError(
            f"to_torch needs torch and torchvision ({err}): pip install 'jaxlogit[torch]'"
        ) from err
    return torch, torchvision


def _num_classes(variables: dict) -> int:
    """The head size: the last dimension of the last dense bias (``fc``/``classifier*``)."""
    params = variables.get("params", {})
    for head in ("fc", "classifier", "classifier_6"):
        if head in params:
            return int(np.shape(params[head]["bias"])[-1])
    raise JaxlogitError(
        "variables have no head (fc/classifier/classifier_6): pass the "
        "variables of models.create(name) for the same name"
    )


def _to_torch_layout(array: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
    """A flax array -> its torch layout (the inverse of ``_torch_import._convert``)."""
    if path[-1] != "kernel":
        return array
    return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T


def _vgg_first_linear_weight(kernel: np.ndarray, pool_size: tuple[int, int]) -> np.ndarray:
    """VGG's first classifier kernel (h*w*C, out) -> torch weight (out, C*h*w).

    The inverse of ``_vgg.torch_flattened_linear_to_kernel``: torch flattens (C, h, w).
    """
    height, width = pool_size
    in_features, out_features = kernel.shape
    channels = in_features // (height * width)
    weight = kernel.reshape(height, width, channels, out_features).transpose(3, 2, 0, 1)
    return weight.reshape(out_features, channels * height * width)


def _torch_backbone(name: str, num_classes: int, torch, torchvision):
    """A freshly initialised torch backbone whose state_dict keys match the flax variables."""
    if name in ("vgg16", "vgg16_bn", "resnet50", "densenet121"):
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    module = _registry.create(name, num_classes)
    in_channels = _registry.spec(name).input_shape[-1]
    if isinstance(module, _vgg.VGG):
        return _vgg_mirror(module, in_channels, torch)
    if isinstance(module, _resnet.ResNet):
        return _resnet_mirror(module, in_channels, torch, torchvision)
    if isinstance(module, _densenet.DenseNet):
        return _densenet_mirror(module, in_channels, torch, torchvision)
    raise JaxlogitError(f"no torch export for {name!r}: export one of {', '.join(_registry.names())}")


def _vgg_mirror(module: _vgg.VGG, in_channels: int, torch):
    """torchvision's VGG layout: ``features`` (conv/BN/ReLU/max-pool), adaptive pool, head."""
    layers, channels = [], in_channels
    for item in module.config:
        if item == _vgg.MAX_POOL:
            layers.append(torch.nn.MaxPool2d(2, 2))
            continue
        layers.append(torch.nn.Conv2d(channels, item, 3, padding=1))
        if module.batch_norm:
            layers.append(torch.nn.BatchNorm2d(item))
        layers.append(torch.nn.ReLU())
        channels = item
    height, width = module.pool_size
    classifier = torch.nn.Sequential(
        torch.nn.Linear(channels * height * width, module.hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(module.dropout),
        torch.nn.Linear(module.hidden, module.hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(module.dropout),
        torch.nn.Linear(module.hidden, module.num_classes),
    )
    return torch.nn.Sequential(
        collections.OrderedDict(
            features=torch.nn.Sequential(*layers),
            avgpool=torch.nn.AdaptiveAvgPool2d(module.pool_size),
            flatten=torch.nn.Flatten(),
            classifier=classifier,
        )
    )


def _resnet_mirror(module: _resnet.ResNet, in_channels: int, torch, torchvision):
    """torchvision's ResNet layout (``conv1``, ``bn1``, ``layer1``..., ``fc``) of any size."""
    resnet = torchvision.models.resnet
    bottleneck = module.block_cls is _resnet.Bottleneck
    block_cls = resnet.Bottleneck if bottleneck else resnet.BasicBlock
    expansion = module.block_cls.expansion
    if module.small_stem:
        stem = {"conv1": torch.nn.Conv2d(in_channels, module.stem_width, 3, padding=1, bias=False)}
    else:
        stem = {"conv1": torch.nn.Conv2d(in_channels, module.stem_width, 7, 2, 3, bias=False)}
    stem.update(bn1=torch.nn.BatchNorm2d(module.stem_width), relu=torch.nn.ReLU())
    if not module.small_stem:
        stem["maxpool"] = torch.nn.MaxPool2d(3, 2, 1)
    stages, channels = {}, module.stem_width
    for index, (size, width, stride) in enumerate(
        zip(module.stage_sizes, module.widths, module.stage_strides)
    ):
        blocks = []
        for block in range(size):
            block_stride = stride if block == 0 else 1
            downsample = None
            if block_stride != 1 or channels != width * expansion:
                downsample = torch.nn.Sequential(
                    torch.nn.Conv2d(channels, width * expansion, 1, block_stride, bias=False),
                    torch.nn.BatchNorm2d(width * expansion),
                )
            blocks.append(block_cls(channels, width, block_stride, downsample))
            channels = width * expansion
        stages[f"layer{index + 1}"] = torch.nn.Sequential(*blocks)
    return torch.nn.Sequential(
        collections.OrderedDict(
            **stem,
            **stages,
            avgpool=torch.nn.AdaptiveAvgPool2d(1),
            flatten=torch.nn.Flatten(),
            fc=torch.nn.Linear(channels, module.num_classes),
        )
    )


def _densenet_mirror(module: _densenet.DenseNet, in_channels: int, torch, torchvision):
    """torchvision's DenseNet, with the 3x3/1 conv + 2x2/2 max-pool stem when ``small_stem``."""
    model = torchvision.models.DenseNet(
        growth_rate=module.growth_rate,
        block_config=tuple(module.block_config),
        num_init_features=module.num_init_features,
        bn_size=module.bn_size,
        num_classes=module.num_classes,
    )
    if module.small_stem:
        model.features.conv0 = torch.nn.Conv2d(
            in_channels, module.num_init_features, 3, padding=1, bias=False
        )
        model.features.pool0 = torch.nn.MaxPool2d(2, 2)
    elif in_channels != 3:
        model.features.conv0 = torch.nn.Conv2d(in_channels, module.num_init_features, 7, 2, 3, bias=False)
    return model


def _load_state_dict(name: str, backbone, arrays: dict[str, np.ndarray], torch) -> None:
    """Loads ``arrays`` into ``backbone`` after checking keys and shapes (BN counters kept)."""
    target = {
        key: value for key, value in backbone.state_dict().items() if not key.endswith("num_batches_tracked")
    }
    missing, unexpected = sorted(set(target) - set(arrays)), sorted(set(arrays) - set(target))
    wrong = [
        f"{key} {arrays[key].shape} != {tuple(target[key].shape)}"
        for key in sorted(set(target) & set(arrays))
        if arrays[key].shape != tuple(target[key].shape)
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{label}: {_torch_import._listing(items)}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shapes", wrong))
            if items
        ]
        raise JaxlogitError(
            f"variables do not fit {name}: {'; '.join(problems)}; pass the "
            f"variables of models.create({name!r})"
        )
    state = backbone.state_dict()
    state.update({key: torch.tensor(np.ascontiguousarray(value)) for key, value in arrays.items()})
    backbone.load_state_dict(state, strict=True)
