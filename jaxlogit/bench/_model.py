"""The model a benchmark attacks: JAX ``logits_fn``, its torch twin, a batch and its labels.

Weights come from, in order: an explicit checkpoint, the newest trained backbone of the arch in
the cache, or random initialisation. ``resnet50`` (and the other ImageNet archs) with torch
installed gets torchvision's random weights imported into flax with ``from_torchvision`` and
exported back with ``to_torch``: the weights go both ways.
"""

from __future__ import annotations

import importlib
import pathlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxlogit import data, models, paths
from jaxlogit.errors import JaxlogitError

COMPACT_BATCH = 256
IMAGENET_BATCH = 8


class BenchModel(NamedTuple):
    """Everything a benchmark needs about the attacked model.

    Attributes:
      arch: registry name.
      logits_fn: images (B, H, W, C) in [0, 1] -> logits (B, C), a ``jax.tree_util.Partial``.
      x: (B, H, W, C) float32 images in [0, 1].
      y: (B,) int32 labels: the model's own predictions, so every sample starts correctly
        classified and every attack has all B samples to work on.
      num_classes: C.
      weights: where the weights come from, for the report.
      images: where the images come from, for the report.
      torch_model: the same weights as an eval-mode torch module (NCHW [0, 1] input, weights
        frozen), or None without torch.
      torch_logits_diff: max |torch logits - JAX logits| on ``x`` (None without torch).
    """

    arch: str
    logits_fn: Callable
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    weights: str
    images: str
    torch_model: Any
    torch_logits_diff: float | None


def is_imagenet(arch: str) -> bool:
    """Whether ``arch`` takes full-size ImageNet images (224x224)."""
    return models.spec(arch).input_shape[0] > 64


def default_batch(arch: str) -> int:
    """256 for the compact backbones, 8 for the ImageNet ones (224x224)."""
    return IMAGENET_BATCH if is_imagenet(arch) else COMPACT_BATCH


def torch_available() -> bool:
    """Whether torch, torchvision and torchattacks import."""
    try:
        for name in ("torch", "torchattacks", "torchvision"):
            importlib.import_module(name)
    except ImportError:
        return False
    return True


def cached_backbone(arch: str, cache: str | None = None) -> pathlib.Path | None:
    """The most recently written trained checkpoint of ``arch`` in the cache, if any."""
    folders = (paths.cache_root(cache) / "backbones").glob(f"{arch}-*/meta.json")
    newest = max(folders, key=lambda meta: meta.stat().st_mtime, default=None)
    return None if newest is None else newest.parent


def _variables(
    arch: str, *, checkpoint: str | None, cache: str | None, seed: int, torchvision_weights: bool
) -> tuple[Any, dict, str]:
    """``(module, variables, description)`` of the weights to benchmark."""
    directory = checkpoint or cached_backbone(arch, cache)
    if directory is not None:
        module, variables, meta = models.load_checkpoint(directory)
        if meta.get("arch") != arch:
            raise JaxlogitError(
                f"checkpoint {directory} holds {meta.get('arch')!r}, not {arch!r}: "
                "pass --arch matching the checkpoint"
            )
        return module, variables, f"trained checkpoint {directory}"
    if torchvision_weights:
        import torch
        import torchvision

        torch.manual_seed(seed)
        state_dict = getattr(torchvision.models, arch)(weights=None).state_dict()
        return (
            models.create(arch),
            models.from_torchvision(arch, state_dict),
            f"random torchvision weights (seed {seed}), imported with from_torchvision",
        )
    module = models.create(arch)
    variables = models.init(module, jax.random.key(seed), models.spec(arch).input_shape)
    return module, variables, f"random weights (models.init, seed {seed}): timings only"


def _images(arch: str, batch: int, *, data_dir: str | None, seed: int) -> tuple[np.ndarray, str]:
    """``(x, description)``: Fashion-MNIST test images for compact archs, else uniform noise."""
    shape = models.spec(arch).input_shape
    if not is_imagenet(arch):
        try:
            default = data.get(data.DEFAULT_DATASET)
            split = default.load(default.eval_split, data_dir)
            x, _ = split.get_batch(np.arange(batch) % len(split))
            return x.astype(np.float32), f"the first {batch} Fashion-MNIST test images"
        except JaxlogitError:
            pass  # no dataset here: noise still times the attacks
    x = np.random.default_rng(seed).uniform(size=(batch, *shape)).astype(np.float32)
    return x, f"{batch} uniform random images (seed {seed})"


def torch_device() -> Any:
    """The torch device of the comparison: CUDA when JAX runs on a GPU and torch sees one (both
    libraries on the same chip), else the CPU."""
    import torch

    on_gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch.device("cuda" if on_gpu else "cpu")


def _torch_twin(arch: str, variables: dict) -> Any:
    """``to_torch`` with frozen weights (attacks only need input gradients), on
    :func:`torch_device`."""
    model = models.to_torch(arch, variables).to(torch_device())
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    """Logits (B, C) of a torch model on NHWC images ``x``."""
    import torch

    with torch.no_grad():
        return model(to_nchw(x)).cpu().numpy()


def to_nchw(x: np.ndarray) -> Any:
    """NHWC numpy images -> a contiguous NCHW torch tensor on :func:`torch_device`."""
    import torch

    images = torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
    return images.to(torch_device())


def prepare(
    arch: str,
    batch: int | None = None,
    *,
    checkpoint: str | None = None,
    cache: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    with_torch: bool = True,
    compute_dtype=None,
) -> BenchModel:
    """Builds the :class:`BenchModel` of ``arch`` for a batch of ``batch`` images.

    Args:
      arch: a registry name.
      batch: B (default: :func:`default_batch`).
      checkpoint: a ``models.save_checkpoint`` folder (default: the newest cached one, else
        random weights).
      cache: the cache root to look in.
      data_dir: where Fashion-MNIST is.
      seed: seed of random weights and random images.
      with_torch: build the torch twin if torch and torchattacks are importable.
      compute_dtype: the JAX backbone's compute dtype (``models.logits_fn``; None: float32).
    """
    batch = default_batch(arch) if batch is None else batch
    with_torch = with_torch and torch_available()
    module, variables, weights = _variables(
        arch,
        checkpoint=checkpoint,
        cache=cache,
        seed=seed,
        torchvision_weights=with_torch and is_imagenet(arch),
    )
    spec = models.spec(arch)
    logits_fn = models.logits_fn(module, variables, mean=spec.mean, std=spec.std, compute_dtype=compute_dtype)
    x, images = _images(arch, batch, data_dir=data_dir, seed=seed)
    logits = np.asarray(jax.jit(lambda f, images: f(images))(logits_fn, x))
    y = logits.argmax(-1).astype(np.int32)
    torch_model, diff = None, None
    if with_torch:
        torch_model = _torch_twin(arch, variables)
        diff = float(np.abs(torch_logits(torch_model, x) - logits).max())
    return BenchModel(arch, logits_fn, x, y, logits.shape[-1], weights, images, torch_model, diff)
