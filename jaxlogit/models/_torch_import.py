"""Import torchvision ``state_dict``s into the flax backbones, failing loudly on any mismatch.

Flax submodules are named after torchvision's module paths with ``.`` replaced by ``_``, so
the torch key of every flax variable follows from its path; the import checks that the two
key sets are equal and every shape fits before converting a single array.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import flax.traverse_util
import jax.numpy as jnp
import numpy as np

from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _registry, _vgg

_TORCH_LEAF = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
# torchvision's own DenseNet loader renames these legacy keys ("norm.1" -> "norm1").
_DENSENET_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
_MAX_LISTED = 6


def from_torchvision(name: str, state_dict: Mapping[str, Any], *, num_classes: int | None = None) -> dict:
    """Variables of model ``name`` from a torchvision ``state_dict``.

    Args:
        name: a registry name, e.g. ``"resnet50"``.
        state_dict: torch key -> torch tensor or numpy array (e.g. ``model.state_dict()``).
            ``num_batches_tracked`` entries are ignored, legacy DenseNet keys accepted.
        num_classes: size of the head (default: the spec's).

    Returns:
        ``{"params": ..., "batch_stats": ...}`` nested dicts of float32 ``jnp`` arrays:
        conv (O,I,H,W) -> (H,W,I,O), linear (out,in) -> (in,out).

    Raises:
        JaxlogitError: a key is missing or unexpected, or a shape differs (the keys are listed).
    """
    module = _registry.create(name, num_classes)
    expected = flax.traverse_util.flatten_dict(
        _registry.variable_shapes(module, _registry.spec(name).input_shape)
    )
    torch_paths = {_torch_key(path): path for path in expected}
    given = _normalise_state_dict(state_dict)
    _check_keys(name, set(torch_paths), set(given))
    _check_shapes(
        name, {key: _torch_shape(path, expected[path].shape) for key, path in torch_paths.items()}, given
    )
    special = _special_converters(module)
    flat = {}
    for key, path in torch_paths.items():
        array = special[key](given[key]) if key in special else _convert(given[key], path)
        flat[path] = jnp.asarray(np.ascontiguousarray(array))
    return flax.traverse_util.unflatten_dict(flat)


def _torch_key(path: tuple[str, ...]) -> str:
    """('params', 'layer1_0', 'conv1', 'kernel') -> 'layer1.0.conv1.weight'."""
    collection, *modules, leaf = path
    return ".".join([*(m.replace("_", ".") for m in modules), _TORCH_LEAF[collection, leaf]])


def _torch_shape(path: tuple[str, ...], flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The torch shape a flax variable comes from: kernels are transposed."""
    if path[-1] != "kernel":
        return tuple(flax_shape)
    if len(flax_shape) == 4:
        height, width, in_features, out_features = flax_shape
        return (out_features, in_features, height, width)
    return tuple(reversed(flax_shape))


def _convert(array: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
    """A torch array -> its flax layout (see :func:`_torch_shape`)."""
    if path[-1] != "kernel":
        return array
    return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array.T


def _special_converters(module) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Keys whose conversion is not the plain transpose (VGG's first classifier layer)."""
    if isinstance(module, _vgg.VGG):
        pool_size = module.pool_size
        return {"classifier.0.weight": lambda w: _vgg.torch_flattened_linear_to_kernel(w, pool_size)}
    return {}


def _normalise_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Drop ``num_batches_tracked``, rename legacy DenseNet keys, make float32 numpy."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        out[_DENSENET_LEGACY_KEY.sub(r"\1\2", key)] = _to_numpy(value)
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def _check_keys(name: str, expected: set[str], given: set[str]) -> None:
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if problems:
        raise JaxlogitError(
            f"state_dict does not fit {name}: {'; '.join(problems)}; pass the "
            f"state_dict of torchvision.models.{name}"
        )


def _check_shapes(name: str, expected: dict[str, tuple[int, ...]], given: dict[str, np.ndarray]) -> None:
    wrong = [
        f"{key} {tuple(given[key].shape)} != {shape}"
        for key, shape in sorted(expected.items())
        if tuple(given[key].shape) != shape
    ]
    if wrong:
        raise JaxlogitError(
            f"state_dict does not fit {name}: {len(wrong)} wrong shapes (got != "
            f"expected): {_listing(wrong)}; pass the state_dict of "
            f"torchvision.models.{name} (with num_classes= if the head differs)"
        )
