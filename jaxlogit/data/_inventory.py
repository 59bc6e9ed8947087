"""What datasets a data dir holds, from file listings and headers only (no image is decoded).

Used by ``jaxlogit info``. Three layouts are recognised, as the readers read them:
ImageNet image folders (``val/<wnid>/`` and ``train/<wnid>/``), TFDS-prepared datasets
(``imagenet2012``, ``fashion_mnist``; split sizes from ``dataset_info.json``) and
Fashion-MNIST IDX files (counts from the IDX headers).
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import struct
from typing import NamedTuple

from jaxlogit.data import _fashion_mnist, _imagenet, _tfds


class SplitCount(NamedTuple):
    """One split: its name, number of images, and number of classes (None: unknown)."""

    name: str
    images: int
    classes: int | None


class FoundDataset(NamedTuple):
    """A dataset found in a data dir.

    Attributes:
      name: ``"imagenet"`` or ``"fashion_mnist"`` (a ``data.load`` name).
      layout: ``"image folders"``, ``"tfds imagenet2012 5.1.0"``, ``"idx files"``, ...
      location: the folder it is read from.
      splits: the splits found, in reading order.
    """

    name: str
    layout: str
    location: pathlib.Path
    splits: tuple[SplitCount, ...]


def _image_folder_split(directory: pathlib.Path, name: str) -> SplitCount:
    """Counts the image files and class folders of ``directory/<class>/`` (files are listed, not read)."""
    folders = [entry for entry in os.scandir(directory) if entry.is_dir()]
    images = sum(
        1
        for folder in folders
        for entry in os.scandir(folder.path)
        if entry.is_file() and entry.name.lower().endswith(_imagenet.IMAGE_EXTENSIONS)
    )
    return SplitCount(name, images, len(folders))


def _image_folders(root: pathlib.Path) -> FoundDataset | None:
    splits = []
    for split, names in _imagenet.FOLDER_NAMES.items():
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        if folder is not None:
            splits.append(_image_folder_split(folder, split))
    return FoundDataset("imagenet", "image folders", root, tuple(splits)) if splits else None


def _tfds_num_classes(version_dir: pathlib.Path) -> int | None:
    """Number of labels of a prepared TFDS dataset (``label.labels.txt``), None if it has none."""
    labels = version_dir / "label.labels.txt"
    if not labels.is_file():
        return None
    return sum(1 for line in labels.read_text().splitlines() if line.strip())


def _tfds_dataset(data_dir: pathlib.Path, tfds_name: str, name: str) -> FoundDataset | None:
    """Split sizes of the newest prepared version of ``tfds_name`` in ``data_dir``, from its metadata."""
    versions = _tfds.prepared_versions(data_dir, tfds_name)
    if not versions:
        return None
    version_dir = data_dir / tfds_name / versions[0]
    info = json.loads((version_dir / "dataset_info.json").read_text())
    classes = _tfds_num_classes(version_dir)
    splits = tuple(
        SplitCount(split["name"], sum(int(n) for n in split.get("shardLengths", [])), classes)
        for split in info.get("splits", [])
    )
    layout = f"tfds {tfds_name} {versions[0]} ({info.get('fileFormat', 'tfrecord')})"
    return FoundDataset(name, layout, data_dir, splits)


def idx_length(path: pathlib.Path) -> int:
    """The number of items an IDX file (``.gz`` or plain) holds, read from its header."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        header = f.read(8)
    return struct.unpack(">I", header[4:8])[0]


def _fashion_mnist_idx(root: pathlib.Path) -> FoundDataset | None:
    location = _fashion_mnist.find_fashion_mnist(root)
    if location is None or not _fashion_mnist._holds_idx(location):
        return None
    num_classes = len(_fashion_mnist.CLASS_NAMES)
    splits = tuple(
        SplitCount(split, idx_length(_fashion_mnist._idx_file(location, prefix, "labels-idx1")), num_classes)
        for split, prefix in _fashion_mnist.SPLITS.items()
    )
    return FoundDataset("fashion_mnist", "idx files", location, splits)


def find_datasets(data_dir: str | os.PathLike) -> list[FoundDataset]:
    """Every dataset a reader would find in ``data_dir``: ImageNet (image folders, TFDS) and
    Fashion-MNIST (IDX files, TFDS). Nothing is decoded: files are counted, headers read.

    Args:
      data_dir: the folder passed as ``--data-dir``.

    Returns:
      The datasets found, possibly none.
    """
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        return []
    found = [_image_folders(root)]
    tfds_dir = _imagenet._tfds_data_dir(root)
    if tfds_dir is not None:
        found.append(_tfds_dataset(tfds_dir, _imagenet.TFDS_NAME, "imagenet"))
    found.append(_fashion_mnist_idx(root))
    found.append(_tfds_dataset(root, _fashion_mnist.TFDS_NAME, "fashion_mnist"))
    return [f for f in found if f is not None]
