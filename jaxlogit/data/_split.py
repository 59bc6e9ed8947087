"""The ``Split`` interface every dataset presents, and its in-memory version ``ArraySplit``."""

from __future__ import annotations

import abc
import functools
import hashlib
from collections.abc import Iterator, Sequence

import numpy as np

from jaxlogit import _digest
from jaxlogit.errors import JaxlogitError


class Split(abc.ABC):
    """One split of a labelled image dataset, read by index.

    Subclasses provide ``labels``, ``class_names``, ``image_shape`` and ``get_batch``;
    ``len``, ``num_classes``, ``batches`` and ``fingerprint`` follow from them (a subclass
    should override ``fingerprint`` with a cheaper identity of its data).
    """

    @property
    @abc.abstractmethod
    def labels(self) -> np.ndarray:
        """All labels, int32 ``(N,)``."""

    @property
    @abc.abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """Human-readable name of each class, ``num_classes`` of them."""

    @property
    @abc.abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of the images ``get_batch`` returns."""

    @abc.abstractmethod
    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels at ``indices``.

        Args:
          indices: int indices into the split, ``(B,)``.

        Returns:
          ``(x, y)``: float32 ``(B, H, W, C)`` in [0, 1], int32 ``(B,)``.
        """

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def file_names(self) -> tuple[str, ...]:
        """The file name of each image (``--selected FILE`` matches them).

        Raises:
          JaxlogitError: the split is not read from named files.
        """
        raise JaxlogitError(
            f"{type(self).__name__} has no file names; --selected needs a dataset read from files (imagenet)"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (the model's output size), not the number present."""
        return len(self.class_names)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identity of the data this split reads (hex SHA-256), part of every cache key made from it.

        It changes when an image or a label does, whatever folder the data sits in. This default
        reads every image through ``get_batch`` (1,024 at a time); ``ArraySplit``, the image
        folders and TFDS splits override it with cheaper identities. Computed once per object.
        A subset (limit, indices) is not part of it: cache keys add that.
        """
        digest = hashlib.sha256(type(self).__qualname__.encode())
        digest.update(_digest.arrays_sha256([self.labels]).encode())
        for _, x, _ in self.batches(1024):
            digest.update(_digest.arrays_sha256([x]).encode())
        return digest.hexdigest()

    def batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Stream consecutive batches of ``[start, stop)`` in index order.

        Args:
          batch_size: images per batch; the last batch may be smaller.
          start: first index (lets an interrupted run resume).
          stop: one past the last index; ``None`` means ``len(self)``.

        Yields:
          ``(first_index, x, y)`` with ``x`` float32 ``(B, H, W, C)`` and ``y`` int32 ``(B,)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, batch_size):
            x, y = self.get_batch(np.arange(first, min(first + batch_size, stop)))
            yield first, x, y


class ArraySplit(Split):
    """A split held in memory as uint8 images.

    Args:
      images_uint8: uint8 ``(N, H, W, C)``.
      labels: integer ``(N,)`` class indices.
      class_names: one name per class.
    """

    def __init__(self, images_uint8: np.ndarray, labels: np.ndarray, class_names: Sequence[str]):
        images_uint8 = np.asarray(images_uint8)
        labels = np.asarray(labels)
        if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {images_uint8.dtype} {images_uint8.shape}"
            )
        if labels.shape != images_uint8.shape[:1]:
            raise ValueError(f"labels {labels.shape} do not match {images_uint8.shape[0]} images")
        self._images = images_uint8
        self._labels = labels.astype(np.int32)
        self._class_names = tuple(class_names)

    @property
    def images(self) -> np.ndarray:
        """All images, uint8 ``(N, H, W, C)``."""
        return self._images

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self._images.shape[1:])

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the uint8 image and int32 label bytes (with their shapes); computed once."""
        return _digest.arrays_sha256([self._images, self._labels])

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64)
        x = self._images[indices].astype(np.float32) / np.float32(255.0)
        return x, self._labels[indices]
