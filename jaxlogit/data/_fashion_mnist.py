"""Fashion-MNIST: the embedded default dataset (10 classes, 28x28 grey images).

Where it is looked for, in order (the first that holds it wins):

1. the ``data_dir`` argument (``--data-dir``) — if given, only there;
2. ``$JAXLOGIT_DATA``;
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``);
4. a TFDS-prepared ``fashion_mnist`` (ArrayRecord) in TFDS's default data dir.

In each of 1-3 the IDX files (``train-images-idx3-ubyte[.gz]`` ...) may sit in the folder
itself or in a ``fashion-mnist/`` or ``fashion_mnist/`` subfolder; 1 and 2 may also be a
TFDS data dir holding a prepared ``fashion_mnist``.
"""

from __future__ import annotations

import functools
import os
import pathlib

import numpy as np

from jaxlogit.data import _tfds
from jaxlogit.data._idx import read_idx
from jaxlogit.data._split import ArraySplit
from jaxlogit.errors import JaxlogitError

SYSTEM_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
TFDS_NAME = "fashion_mnist"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLITS = {"train": "train", "test": "t10k"}  # split -> IDX file prefix
_SUBDIRS = ("", "fashion-mnist", "fashion_mnist")
_INSTALL_HINT = "install it with `apt-get install -y dataset-fashion-mnist` or pass --data-dir DIR"


def _idx_file(directory: pathlib.Path, prefix: str, kind: str) -> pathlib.Path | None:
    """``<prefix>-<kind>-ubyte.gz`` or the plain file in ``directory``, if present."""
    for name in (f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte"):
        if (directory / name).is_file():
            return directory / name
    return None


def _holds_idx(directory: pathlib.Path) -> bool:
    """Whether all four IDX files are in ``directory``."""
    return all(
        _idx_file(directory, prefix, kind) is not None
        for prefix in SPLITS.values()
        for kind in ("images-idx3", "labels-idx1")
    )


def _locate_in(root: pathlib.Path) -> pathlib.Path | None:
    """The IDX folder under ``root``, else ``root`` if it is a TFDS dir with fashion_mnist."""
    for sub in _SUBDIRS:
        if _holds_idx(root / sub):
            return root / sub if sub else root
    if _tfds.prepared_versions(root, TFDS_NAME):
        return root
    return None


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The folder Fashion-MNIST would be read from, or ``None`` if there is none.

    Args:
      data_dir: look only here (IDX files, or a TFDS data dir) when given.

    Returns:
      A folder holding the four IDX files, or a TFDS data dir holding ``fashion_mnist/``.
    """
    if data_dir is not None:
        return _locate_in(pathlib.Path(data_dir).expanduser())
    env = os.environ.get("JAXLOGIT_DATA")
    for root in ([pathlib.Path(env).expanduser()] if env else []) + [SYSTEM_DIR]:
        found = _locate_in(root)
        if found is not None:
            return found
    tfds_dir = _tfds.default_tfds_dir()
    return tfds_dir if _tfds.prepared_versions(tfds_dir, TFDS_NAME) else None


def _read_idx_split(directory: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(N, 28, 28, 1)`` images and int32 ``(N,)`` labels from IDX files."""
    image_file = _idx_file(directory, SPLITS[split], "images-idx3")
    label_file = _idx_file(directory, SPLITS[split], "labels-idx1")
    images = read_idx(image_file, ndim=3)
    labels = read_idx(label_file, ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise JaxlogitError(
            f"{image_file} holds {images.shape[0]} images but {label_file} holds {labels.shape[0]} labels; "
            "fetch both files again"
        )
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise JaxlogitError(
            f"{label_file} has label {labels.max()}, Fashion-MNIST has 10 classes; fetch it again"
        )
    return images[..., None], labels.astype(np.int32)


def _read_tfds_split(data_dir: pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(N, 28, 28, 1)`` images and int32 ``(N,)`` labels from a prepared TFDS dataset."""
    items = _tfds.read_all(_tfds.open_data_source(data_dir, TFDS_NAME, split))
    images = np.stack([np.asarray(item["image"], np.uint8).reshape(28, 28, 1) for item in items])
    labels = np.array([item["label"] for item in items], dtype=np.int32)
    return images, labels


def source_files(split: str, data_dir: str | os.PathLike | None = None) -> list[pathlib.Path] | None:
    """The IDX files (images, labels) ``split`` is read from; None when it is read from TFDS or
    not found (loading it says why)."""
    location = find_fashion_mnist(data_dir) if split in SPLITS else None
    if location is None or not _holds_idx(location):
        return None
    return [_idx_file(location, SPLITS[split], kind) for kind in ("images-idx3", "labels-idx1")]


@functools.cache
def _read_split(location: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded arrays of one split, cached per process (they are read-only)."""
    directory = pathlib.Path(location)
    reader = _read_idx_split if _holds_idx(directory) else _read_tfds_split
    images, labels = reader(directory, split)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _not_found_message(data_dir: str | os.PathLike | None) -> str:
    if data_dir is not None:
        return (
            f"Fashion-MNIST not found in {data_dir} (expected train-images-idx3-ubyte[.gz] and the other "
            "three IDX files, or a TFDS-prepared fashion_mnist); point --data-dir at them, or "
            "`apt-get install -y dataset-fashion-mnist` and drop --data-dir"
        )
    places = ", ".join(["$JAXLOGIT_DATA", str(SYSTEM_DIR), str(_tfds.default_tfds_dir())])
    return f"Fashion-MNIST not found (looked in {places}); {_INSTALL_HINT}"


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None) -> ArraySplit:
    """One split of Fashion-MNIST, held in memory.

    Args:
      split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
      data_dir: where to look instead of the default places (see the module docstring).

    Returns:
      An ``ArraySplit`` with uint8 images ``(N, 28, 28, 1)`` and the 10 class names.

    Raises:
      JaxlogitError: unknown split, data not found, or a corrupt file.
    """
    if split not in SPLITS:
        raise JaxlogitError(f"unknown Fashion-MNIST split {split!r}; use one of: {', '.join(SPLITS)}")
    location = find_fashion_mnist(data_dir)
    if location is None:
        raise JaxlogitError(_not_found_message(data_dir))
    images, labels = _read_split(str(location.resolve()), split)
    return ArraySplit(images, labels, CLASS_NAMES)
