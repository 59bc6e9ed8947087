"""ImageNet (ILSVRC 2012) from a TFDS data dir or an image-folder tree, decoded lazily.

Two layouts are read from ``data_dir``:

* TFDS: a data dir holding a prepared ``imagenet2012/<version>/`` in ArrayRecord format
  (``tfds build imagenet2012 --manual_dir ... --file_format=array_record``); read with
  ``tfds.data_source``, which needs no TensorFlow.
* Folders: ``data_dir/val/<wnid>/*.JPEG`` (or ``validation/``) and ``data_dir/train/<wnid>/``,
  as torchvision's ``ImageFolder`` reads them. When every folder is a standard ImageNet wnid
  the label is the standard class index (the wnids sorted), so a folder holding only some
  classes still gets the labels a 1000-class model uses; otherwise the folders, sorted, are
  the classes.

Images go through torchvision's evaluation transform (``_transforms.eval_transform``) in
``get_batch``, so a split never holds more than one batch of pixels.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Sequence

import numpy as np

from jaxlogit import _digest, paths
from jaxlogit.data import _tfds
from jaxlogit.data._class_names import imagenet_class_names, imagenet_wnids
from jaxlogit.data._split import Split
from jaxlogit.data._transforms import CROP, decode_and_transform, load_and_transform
from jaxlogit.errors import JaxlogitError

TFDS_NAME = "imagenet2012"
SPLITS = ("validation", "train")
FOLDER_NAMES = {"validation": ("val", "validation"), "train": ("train",)}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LAYOUT_HINT = (
    "pass --data-dir DIR where DIR is a TFDS data dir holding a prepared imagenet2012 (ArrayRecord) "
    "or a folder with val/<wnid>/*.JPEG (and train/<wnid>/)"
)
_MAX_DECODE_THREADS = 8


MIN_IMAGE_SIZE = 32
"""The smallest ``--image-size``: the torchvision backbones downsample by 32."""


def check_image_size(image_size: int) -> int:
    """``image_size`` if it is an int >= ``MIN_IMAGE_SIZE``, else a one-line ``JaxlogitError``."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise JaxlogitError(
            f"--image-size {image_size!r}: pass a side of at least {MIN_IMAGE_SIZE} pixels "
            f"(the paper's is {CROP})"
        )
    return image_size


def _size_identity(image_size: int) -> str:
    """What a crop size adds to a fingerprint: nothing for the paper's 224 (keys made before it existed)."""
    return "" if image_size == CROP else f"crop={image_size}\n"


def _decode_all(decode: Callable, items: Sequence, image_size: int = CROP) -> np.ndarray:
    """``decode`` each item on a few threads (PIL releases the GIL); stacked float32 ``(B, ...)``."""
    if not items:
        return np.zeros((0, image_size, image_size, 3), np.float32)
    if len(items) == 1:
        return decode(items[0])[None]
    workers = min(_MAX_DECODE_THREADS, os.cpu_count() or 1, len(items))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(decode, items)))


class ImageFolderSplit(Split):
    """``<directory>/<class>/<image>`` files, class folders and files in sorted order.

    Args:
      directory: e.g. ``DIR/val``, whose sub-folders are wnids (or any class names).
      image_size: side of the centre crop ``get_batch`` returns (the paper's 224).
    """

    def __init__(self, directory: str | os.PathLike, image_size: int = CROP):
        directory = pathlib.Path(directory)
        self._directory = directory
        self._image_size = check_image_size(image_size)
        folders = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        if not folders:
            raise JaxlogitError(f"no class folders in {directory}; expected {directory}/<wnid>/*.JPEG")
        if set(folders) <= set(imagenet_wnids()):
            index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
            self._class_names = imagenet_class_names()
        else:
            index = {name: i for i, name in enumerate(folders)}
            self._class_names = tuple(folders)
        self._paths: list[str] = []
        labels: list[int] = []
        for folder in folders:
            files = sorted(
                entry.name
                for entry in os.scandir(directory / folder)
                if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
            )
            self._paths.extend(os.fspath(directory / folder / name) for name in files)
            labels.extend([index[folder]] * len(files))
        if not self._paths:
            raise JaxlogitError(
                f"no images in the class folders of {directory}; expected {directory}/<wnid>/*.JPEG"
            )
        self._labels = np.asarray(labels, dtype=np.int32)
        self._labels.setflags(write=False)

    @property
    def paths(self) -> tuple[str, ...]:
        """The image file of each index."""
        return tuple(self._paths)

    @property
    def file_names(self) -> tuple[str, ...]:
        """The file name of each index (``ILSVRC2012_val_00000001.JPEG``)."""
        return tuple(os.path.basename(path) for path in self._paths)

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of each image's path relative to the split folder and its size in bytes, in
        index order, and of the labels. Files are listed, never read; computed once per object."""
        digest = hashlib.sha256(_digest.arrays_sha256([self._labels]).encode())
        digest.update(_size_identity(self._image_size).encode())
        prefix = len(os.fspath(self._directory / "x")) - 1  # each path is directory/<class>/<file>
        for path in self._paths:
            relative = path[prefix:].replace(os.sep, "/")
            digest.update(f"{relative}\0{os.stat(path).st_size}\n".encode())
        return digest.hexdigest()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self._image_size, self._image_size, 3)

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        decode = functools.partial(load_and_transform, crop=self._image_size)
        x = _decode_all(decode, [self._paths[i] for i in indices], self._image_size)
        return x, self._labels[indices]


class TfdsImageSplit(Split):
    """One split of a TFDS-prepared ``imagenet2012``, read record by record.

    ``labels`` needs one pass over every record (the labels sit beside the JPEG bytes); it is
    computed on first use and kept under the cache root, so later runs read it at once.

    Args:
      data_dir: the TFDS data dir (it holds ``imagenet2012/<version>/``).
      split: TFDS split name, ``"validation"`` or ``"train"``.
      image_size: side of the centre crop ``get_batch`` returns (the paper's 224).
    """

    def __init__(self, data_dir: str | os.PathLike, split: str, image_size: int = CROP):
        self._data_dir = pathlib.Path(data_dir)
        self._split = split
        self._image_size = check_image_size(image_size)
        self._source = _tfds.open_data_source(self._data_dir, TFDS_NAME, split, skip_image_decoding=True)

    def __len__(self) -> int:
        return len(self._source)

    @functools.cached_property
    def labels(self) -> np.ndarray:
        cache_file = self._labels_cache_file()
        if cache_file.is_file():
            labels = np.load(cache_file)
        else:
            labels = self._read_labels()
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(cache_file.name + ".tmp.npy")
            np.save(tmp, labels)
            os.replace(tmp, cache_file)
        labels.setflags(write=False)
        return labels

    @functools.cached_property
    def file_names(self) -> tuple[str, ...]:
        """Each record's ``file_name`` (one pass over the records, kept beside the labels' cache).

        Raises:
          JaxlogitError: the prepared dataset has no ``file_name`` feature.
        """
        cache_file = self._labels_cache_file().with_name("file_names.json")
        if cache_file.is_file():
            return tuple(json.loads(cache_file.read_text()))
        names = []
        for first in range(0, len(self), 1024):
            records = self._source.__getitems__(list(range(first, min(first + 1024, len(self)))))
            if records and "file_name" not in records[0]:
                raise JaxlogitError(f"the records of {self._data_dir} have no file_name; cannot match names")
            names.extend(_text(record["file_name"]) for record in records)
        paths.write_json_atomic(cache_file, names)
        return tuple(names)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the TFDS name, prepared version, split and number of records."""
        identity = {
            "tfds": TFDS_NAME,
            "version": str(self._source.dataset_info.version),
            "split": self._split,
            "num_examples": len(self),
        }
        if self._image_size != CROP:
            identity["crop"] = self._image_size
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def _labels_cache_file(self) -> pathlib.Path:
        config = {
            "data_dir": str(self._data_dir.resolve()),
            "version": str(self._source.dataset_info.version),
            "split": self._split,
            "num_examples": len(self),
        }
        return paths.artifact_dir("data", f"{TFDS_NAME}-{self._split}-labels", config) / "labels.npy"

    def _read_labels(self) -> np.ndarray:
        labels = np.empty(len(self), dtype=np.int32)
        chunk = 1024
        for first in range(0, len(self), chunk):
            keys = list(range(first, min(first + chunk, len(self))))
            labels[first : first + len(keys)] = [
                record["label"] for record in self._source.__getitems__(keys)
            ]
        return labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return imagenet_class_names()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self._image_size, self._image_size, 3)

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        keys = [int(i) for i in np.asarray(indices).reshape(-1)]
        records = self._source.__getitems__(keys) if keys else []
        decode = functools.partial(decode_and_transform, crop=self._image_size)
        x = _decode_all(decode, [record["image"] for record in records], self._image_size)
        y = np.asarray([record["label"] for record in records], dtype=np.int32)
        return x, y


def _text(value) -> str:
    """A TFDS text feature (bytes or str) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _tfds_data_dir(root: pathlib.Path) -> pathlib.Path | None:
    """The TFDS data dir ``root`` points at: ``root``, or its ancestor when it is
    ``imagenet2012[/<version>]``."""
    if _tfds.prepared_versions(root, TFDS_NAME):
        return root
    if root.name == TFDS_NAME and _tfds.prepared_versions(root.parent, TFDS_NAME):
        return root.parent
    if root.parent.name == TFDS_NAME and (root / "dataset_info.json").is_file():
        return root.parent.parent
    return None


def load_imagenet(split: str, data_dir: str | os.PathLike | None, image_size: int = CROP) -> Split:
    """A lazily decoded ImageNet split from ``data_dir`` (TFDS data dir or image folders).

    Args:
      split: ``"validation"`` (alias ``"val"``) or ``"train"``.
      data_dir: see the module docstring; required.
      image_size: S, the side of the centre crop (``--image-size``; the paper's 224), cut from
        the image resized to a shorter side of ``S * 256 / 224``.

    Returns:
      A ``Split`` whose ``get_batch`` gives float32 ``(B, S, S, 3)`` in [0, 1].

    Raises:
      JaxlogitError: unknown split, no ``data_dir``, no recognised layout in it, or a size < 32.
    """
    check_image_size(image_size)
    split = "validation" if split == "val" else split
    if split not in SPLITS:
        raise JaxlogitError(f"unknown ImageNet split {split!r}; use one of: {', '.join(SPLITS)}")
    if data_dir is None or not str(data_dir).strip():
        raise JaxlogitError(f"ImageNet needs a data dir; {LAYOUT_HINT}")
    root = pathlib.Path(data_dir).expanduser()
    if not root.is_dir():
        raise JaxlogitError(f"ImageNet data dir {root} is not a folder; {LAYOUT_HINT}")
    tfds_dir = _tfds_data_dir(root)
    if tfds_dir is not None:
        return TfdsImageSplit(tfds_dir, split, image_size)
    for name in FOLDER_NAMES[split]:
        if (root / name).is_dir():
            return ImageFolderSplit(root / name, image_size)
    if any(root.glob("ILSVRC2012_img_*.tar")):
        raise JaxlogitError(
            f"{root} holds the ImageNet archives but no prepared dataset; run "
            f"`tfds build imagenet2012 --manual_dir {root} --file_format=array_record` and pass its data "
            "dir, "
            "or extract the images to DIR/val/<wnid>/"
        )
    raise JaxlogitError(f"no ImageNet {split} split found in {root}; {LAYOUT_HINT}")
