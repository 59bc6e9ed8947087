"""Datasets as ``Split`` objects: NHWC float32 images in [0, 1] and int32 labels, by index.

>>> split = load("fashion_mnist", "test")                 # doctest: +SKIP
>>> x, y = split.get_batch([0, 1, 2])                     # doctest: +SKIP
>>> x.shape, y.dtype                                      # doctest: +SKIP
((3, 28, 28, 1), dtype('int32'))

``"fashion_mnist"`` is found without arguments (see ``find_fashion_mnist``);
``"imagenet"`` needs ``data_dir`` (a TFDS data dir or ``DIR/val/<wnid>/*.JPEG``).
"""

from __future__ import annotations

import os

from jaxlogit.data._class_names import imagenet_class_names, imagenet_wnids
from jaxlogit.data._fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASS_NAMES
from jaxlogit.data._fashion_mnist import find_fashion_mnist, load_fashion_mnist
from jaxlogit.data._idx import read_idx, write_idx
from jaxlogit.data._imagenet import ImageFolderSplit, TfdsImageSplit, load_imagenet
from jaxlogit.data._selection import selected_indices
from jaxlogit.data._split import ArraySplit, Split
from jaxlogit.data._transforms import eval_transform
from jaxlogit.errors import JaxlogitError

DATASETS = ("fashion_mnist", "imagenet")


def load(name: str, split: str, data_dir: str | os.PathLike | None = None) -> Split:
    """One split of a dataset.

    Args:
      name: ``"fashion_mnist"`` or ``"imagenet"``.
      split: ``"train"``/``"test"`` for Fashion-MNIST, ``"validation"``/``"train"`` for ImageNet.
      data_dir: where the data is; optional for Fashion-MNIST, required for ImageNet.

    Returns:
      A ``Split``: ``get_batch(indices)`` gives float32 ``(B, H, W, C)`` in [0, 1] and int32 ``(B,)``.

    Raises:
      JaxlogitError: unknown name or split, or data not found.
    """
    if name == "fashion_mnist":
        return load_fashion_mnist(split, data_dir)
    if name == "imagenet":
        return load_imagenet(split, data_dir)
    raise JaxlogitError(f"unknown dataset {name!r}; use one of: {', '.join(DATASETS)}")


__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASS_NAMES",
    "ArraySplit",
    "ImageFolderSplit",
    "Split",
    "TfdsImageSplit",
    "eval_transform",
    "find_fashion_mnist",
    "imagenet_class_names",
    "imagenet_wnids",
    "load",
    "load_fashion_mnist",
    "load_imagenet",
    "read_idx",
    "selected_indices",
    "write_idx",
]
