"""Reading TFDS-prepared datasets with ``tfds.data_source`` (ArrayRecord, no TensorFlow).

``tensorflow_datasets`` is imported lazily: it costs about a second and most runs
never need it.
"""

from __future__ import annotations

import json
import os
import pathlib

from jaxlogit.errors import JaxlogitError


def default_tfds_dir() -> pathlib.Path:
    """TFDS's default data dir: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (as TFDS computes it)."""
    return pathlib.Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


def prepared_versions(data_dir: pathlib.Path, name: str) -> list[str]:
    """Versions of dataset ``name`` prepared under ``data_dir``, newest first.

    A version counts when ``data_dir/name/<version>/dataset_info.json`` exists.
    """
    root = data_dir / name
    if not root.is_dir():
        return []
    found = [p.parent.name for p in root.glob("*/dataset_info.json")]
    return sorted(found, key=_version_key, reverse=True)


def _file_format(data_dir: pathlib.Path, name: str, version: str) -> str:
    """The ``fileFormat`` recorded in ``dataset_info.json`` (TFDS omits it for tfrecord)."""
    info = json.loads((data_dir / name / version / "dataset_info.json").read_text())
    return info.get("fileFormat", "tfrecord")


def open_data_source(data_dir: pathlib.Path, name: str, split: str, *, skip_image_decoding: bool = False):
    """``tfds.data_source`` for the newest prepared version of ``name`` under ``data_dir``.

    Args:
      data_dir: a TFDS data dir (it holds ``name/<version>/``).
      name: TFDS dataset name, e.g. ``"imagenet2012"``.
      split: TFDS split name, e.g. ``"validation"``.
      skip_image_decoding: return the ``image`` feature as encoded bytes (decode it yourself).

    Returns:
      A random-access source whose items are dicts of numpy values.

    Raises:
      JaxlogitError: nothing prepared, prepared as tfrecord, or the split is missing.
    """
    versions = prepared_versions(data_dir, name)
    if not versions:
        raise JaxlogitError(
            f"no prepared TFDS dataset {name!r} in {data_dir}; prepare it there with `tfds build {name}`"
        )
    version = versions[0]
    fmt = _file_format(data_dir, name, version)
    if fmt != "array_record":
        raise JaxlogitError(
            f"{data_dir / name / version} is prepared as {fmt}, but reading without TensorFlow needs "
            f"ArrayRecord; rebuild it with `tfds build {name} --file_format=array_record`"
        )
    import tensorflow_datasets as tfds

    decoders = {"image": tfds.decode.SkipDecoding()} if skip_image_decoding else None
    try:
        return tfds.data_source(
            f"{name}:{version}", split=split, data_dir=os.fspath(data_dir), decoders=decoders
        )
    except (ValueError, KeyError, FileNotFoundError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise JaxlogitError(
            f"cannot read split {split!r} of {name} {version} in {data_dir}: {first_line}; "
            "check the split name and that preparation finished"
        ) from e


def read_all(source, chunk: int = 1024) -> list[dict]:
    """Every item of a data source, read ``chunk`` records at a time."""
    items: list[dict] = []
    for first in range(0, len(source), chunk):
        keys = range(first, min(first + chunk, len(source)))
        items.extend(source.__getitems__(list(keys)))
    return items
