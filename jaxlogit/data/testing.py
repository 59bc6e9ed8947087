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
