"""Datasets as ``Split`` objects: NHWC float32 images in [0, 1] and int32 labels, by index.

>>> split = load("fashion_mnist", "test")                 # doctest: +SKIP
>>> x, y = split.get_batch([0, 1, 2])                     # doctest: +SKIP
>>> x.shape, y.dtype                                      # doctest: +SKIP
((3, 28, 28, 1), dtype('int32'))

Datasets are registered by name (``names()``, ``get(name) -> DatasetSpec``, ``register``):
``"fashion_mnist"`` is found without arguments (see ``find_fashion_mnist``);
``"imagenet"`` needs ``data_dir`` (a TFDS data dir or ``DIR/val/<wnid>/*.JPEG``).
"""

from __future__ import annotations

from jaxlogit.data._class_names import imagenet_class_names, imagenet_wnids
from jaxlogit.data._fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASS_NAMES
from jaxlogit.data._fashion_mnist import find_fashion_mnist, load_fashion_mnist
from jaxlogit.data._fingerprint import split_fingerprint
from jaxlogit.data._idx import read_idx, write_idx
from jaxlogit.data._imagenet import ImageFolderSplit, TfdsImageSplit, load_imagenet
from jaxlogit.data._registry import (
    BACKBONE_KINDS,
    COMPACT,
    DEFAULT_DATASET,
    IMAGENET,
    DatasetSpec,
    get,
    load,
    names,
    register,
    unregister,
)
from jaxlogit.data._selection import indices_of_names, read_name_list, selected_indices
from jaxlogit.data._split import ArraySplit, Split
from jaxlogit.data._stream import (
    MAX_DEFAULT_WORKERS,
    Batches,
    BatchReader,
    check_workers,
    default_workers,
    iter_batches,
)
from jaxlogit.data._subset import SubsetSplit, balanced_indices, limited, subset_rule
from jaxlogit.data._transforms import eval_transform

__all__ = [
    "BACKBONE_KINDS",
    "COMPACT",
    "DEFAULT_DATASET",
    "FASHION_MNIST_CLASS_NAMES",
    "IMAGENET",
    "MAX_DEFAULT_WORKERS",
    "ArraySplit",
    "BatchReader",
    "Batches",
    "DatasetSpec",
    "ImageFolderSplit",
    "Split",
    "SubsetSplit",
    "balanced_indices",
    "limited",
    "subset_rule",
    "TfdsImageSplit",
    "check_workers",
    "default_workers",
    "eval_transform",
    "find_fashion_mnist",
    "get",
    "imagenet_class_names",
    "imagenet_wnids",
    "indices_of_names",
    "iter_batches",
    "load",
    "load_fashion_mnist",
    "load_imagenet",
    "names",
    "read_idx",
    "read_name_list",
    "register",
    "selected_indices",
    "split_fingerprint",
    "unregister",
    "write_idx",
]
