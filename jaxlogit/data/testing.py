"""Tiny on-disk datasets in the real layouts, for tests (no TensorFlow, no download).

* ``write_image_folder``: ``root/<split_folder>/<wnid>/<name>.JPEG`` files.
* ``write_tfds_imagenet`` / ``write_tfds_fashion_mnist``: a real TFDS-prepared dataset
  (ArrayRecord files, ``dataset_info.json``, ``features.json``) that ``tfds.data_source``
  reads exactly as it reads the full one. ``tfds.testing.mock_data`` cannot stand in for it:
  its fake images are encoded with TensorFlow, which ``SkipDecoding`` reads need.
"""

from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from jaxlogit.data._class_names import imagenet_wnids
from jaxlogit.data._fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASS_NAMES


def encode_image(pixels: np.ndarray, fmt: str = "JPEG") -> bytes:
    """uint8 ``(H, W)`` or ``(H, W, 3)`` pixels as encoded ``fmt`` bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image_folder(
    root: str | os.PathLike, split_folder: str, images: Mapping[str, Sequence[np.ndarray]]
) -> list[pathlib.Path]:
    """Write ``root/split_folder/<class>/<class>_<i>.JPEG`` for each class's uint8 images.

    Returns:
      The written files, in the order the folder reader lists them.
    """
    written = []
    for folder in sorted(images):
        directory = pathlib.Path(root) / split_folder / folder
        directory.mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(images[folder]):
            path = directory / f"{folder}_{i:04d}.JPEG"
            path.write_bytes(encode_image(pixels))
            written.append(path)
    return written


def _prepare(
    data_dir: str | os.PathLike,
    name: str,
    version: str,
    make_features: Callable,
    splits: Mapping[str, Sequence[dict]],
) -> pathlib.Path:
    """Prepare TFDS dataset ``name:version`` in ArrayRecord format from in-memory examples."""
    import tensorflow_datasets as tfds

    dataset_name = name

    class _TinyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=make_features(tfds))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split):
            for i, example in enumerate(splits[split]):
                yield f"{split}-{i}", example

    tfds.disable_progress_bar()
    builder = _TinyBuilder(data_dir=os.fspath(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return pathlib.Path(data_dir)


def write_tfds_imagenet(
    data_dir: str | os.PathLike, splits: Mapping[str, Sequence[tuple[bytes, str, str]]]
) -> pathlib.Path:
    """A prepared ``imagenet2012`` 5.1.0 under ``data_dir``.

    Args:
      data_dir: the TFDS data dir to create.
      splits: split name -> ``(encoded image, wnid, file_name)`` per example.
        TFDS stores the examples in its own (hashed) order; match them by ``file_name``.
    """

    def features(tfds):
        return tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=list(imagenet_wnids())),
                "file_name": tfds.features.Text(),
            }
        )

    examples = {
        split: [
            {"image": io.BytesIO(data), "label": wnid, "file_name": file_name}
            for data, wnid, file_name in items
        ]
        for split, items in splits.items()
    }
    return _prepare(data_dir, "imagenet2012", "5.1.0", features, examples)


def write_tfds_fashion_mnist(
    data_dir: str | os.PathLike, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> pathlib.Path:
    """A prepared ``fashion_mnist`` 3.0.1 under ``data_dir``.

    Args:
      data_dir: the TFDS data dir to create.
      splits: split name -> (uint8 images ``(N, 28, 28)``, int labels ``(N,)``).
        TFDS stores the examples in its own (hashed) order.
    """

    def features(tfds):
        return tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=list(FASHION_MNIST_CLASS_NAMES)),
            }
        )

    examples = {
        split: [
            {"image": io.BytesIO(encode_image(image, "PNG")), "label": int(label)}
            for image, label in zip(*arrays)
        ]
        for split, arrays in splits.items()
    }
    return _prepare(data_dir, "fashion_mnist", "3.0.1", features, examples)


SIZES = ((375, 500), (80, 60), (500, 333), (256, 256))
"""(H, W) of the tiny ImageNet's images, cycled: 500x375, 60x80, ... as real ImageNet has."""
VARIANTS = ("rgb", "gray", "cmyk", "png")
"""How the tiny ImageNet's images are stored, cycled: an RGB JPEG, a grayscale JPEG, a CMYK JPEG,
a PNG saved as ``.JPEG`` (all four occur in ImageNet's training set)."""


def tinted_image(rng: np.random.Generator, label: int, shape: tuple[int, int]) -> np.ndarray:
    """uint8 ``(H, W, 3)`` noise tinted by ``label`` (classes differ in brightness and colour, so a
    backbone's features tell them apart, in grey too)."""
    tint = 40 + 60 * (label % 4) + np.roll(np.array([40, 0, 0]), label)
    noise = rng.integers(-20, 21, (*shape, 3))
    return np.clip(tint + noise, 0, 255).astype(np.uint8)


def encode_variant(pixels: np.ndarray, variant: str) -> bytes:
    """uint8 RGB ``pixels`` encoded as one of ``VARIANTS``."""
    image = Image.fromarray(pixels)
    image = {"gray": image.convert("L"), "cmyk": image.convert("CMYK")}.get(variant, image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG" if variant == "png" else "JPEG")
    return buffer.getvalue()


def write_tiny_imagenet(
    root: str | os.PathLike,
    wnids: Sequence[str],
    per_class: Mapping[str, int],
    *,
    seed: int = 0,
    tfds: bool = True,
) -> dict[str, list[tuple[bytes, str, str]]]:
    """A tiny ImageNet in both layouts: ``root/folders/{train,val}/<wnid>/*.JPEG`` and a
    TFDS-prepared ``imagenet2012`` under ``root/tfds``, holding the same images.

    Images cycle through ``SIZES`` and ``VARIANTS``; each class has its own tint. Validation
    files are named as ImageNet's (``ILSVRC2012_val_00000001.JPEG``, numbered across classes),
    training files ``<wnid>_<i>.JPEG``. The TFDS copy stores the CMYK and PNG images re-encoded
    as RGB JPEG, as TFDS's own ImageNet preparation does.

    Args:
      root: the folder to create.
      wnids: real wnids (``imagenet_wnids()``), one per class.
      per_class: ``{"train": n, "validation": m}`` images per class.
      seed: of the pixels.
      tfds: whether to write the TFDS copy too (it needs ``tensorflow_datasets``).

    Returns:
      split -> ``(encoded bytes as stored in the folders, wnid, file name)`` per image.
    """
    rng = np.random.default_rng(seed)
    folders = {"train": "train", "validation": "val"}
    written: dict[str, list[tuple[bytes, str, str]]] = {}
    for split, count in per_class.items():
        items, number = [], 0
        for label, wnid in enumerate(wnids):
            directory = pathlib.Path(root) / "folders" / folders[split] / wnid
            directory.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                number += 1
                pixels = tinted_image(rng, label, SIZES[number % len(SIZES)])
                encoded = encode_variant(pixels, VARIANTS[number % len(VARIANTS)])
                name = f"ILSVRC2012_val_{number:08d}.JPEG" if split == "validation" else f"{wnid}_{i}.JPEG"
                (directory / name).write_bytes(encoded)
                items.append((encoded, wnid, name))
        written[split] = items
    if tfds:
        write_tfds_imagenet(
            pathlib.Path(root) / "tfds", {s: [_as_tfds(*item) for item in v] for s, v in written.items()}
        )
    return written


def _as_tfds(encoded: bytes, wnid: str, name: str) -> tuple[bytes, str, str]:
    """An image as TFDS's ImageNet stores it: CMYK and PNG re-encoded as RGB JPEG, others as is."""
    with Image.open(io.BytesIO(encoded)) as image:
        if image.format == "JPEG" and image.mode in ("RGB", "L"):
            return encoded, wnid, name
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue(), wnid, name


def torchvision_stand_in(
    arch: str, images: np.ndarray, labels: np.ndarray, path: str | os.PathLike, *, seed: int = 0
) -> pathlib.Path:
    """Saves a torchvision ``arch`` (``resnet50``, ``vgg16_bn``, ``densenet121``) with random
    weights, but a last layer that classifies ``images`` by their nearest class centroid, as a
    ``.pth`` state_dict (what `jaxlogit convert` reads). Random weights alone classify nothing
    right, and the paper's selected set is the correctly classified images. Needs torch.

    Args:
      arch: a torchvision model name.
      images: float32 ``(N, H, W, 3)`` in [0, 1], as the ImageNet splits give them.
      labels: int ``(N,)`` their classes (0..999).
      path: the ``.pth`` file to write.
      seed: ``torch.manual_seed`` of the random weights.
    """
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)().eval()
    head = model.fc if hasattr(model, "fc") else model.classifier
    head = head[-1] if isinstance(head, torch.nn.Sequential) else head
    features = []
    hook = head.register_forward_hook(lambda module, args, out: features.append(args[0]))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(((images - mean) / std).astype(np.float32).transpose(0, 3, 1, 2))
    with torch.no_grad():
        model(x)
    hook.remove()
    f = features[0].double().numpy()
    weight, bias = np.zeros(head.weight.shape), np.full(head.bias.shape, -1000.0)
    centre = f.mean(0)
    for c in np.unique(labels):
        d = f[labels == c].mean(0) - centre  # logit_c = s ((f - centre) . d - |d|^2 / 2)
        scale = 10.0 / max(float(d @ d), 1e-12)
        weight[c], bias[c] = scale * d, -scale * (d @ centre + d @ d / 2)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    torch.save(model.state_dict(), path)
    return pathlib.Path(path)
