"""File names, the manifest and its checks: what writer and reader agree on."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np

from jaxlogit import paths
from jaxlogit.errors import JaxlogitError

FORMAT = "jaxlogit.logit_store"
VERSION = 1
MANIFEST = "manifest.json"

#: The arrays every store holds, with the dtype they are stored in. Rows are images.
REQUIRED_DTYPES = {
    "clean_logits": np.dtype(np.float32),  # (N, C)
    "adv_logits": np.dtype(np.float32),  # (N, C)
    "labels": np.dtype(np.int32),  # (N,)
    "success": np.dtype(np.bool_),  # (N,)
    "norm": np.dtype(np.float32),  # (N,)
}

_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")


def shard_path(directory: pathlib.Path, index: int, key: str) -> pathlib.Path:
    """The ``.npy`` file holding array ``key`` of shard ``index``."""
    return directory / f"shard-{index:05d}.{key}.npy"


def shard_bounds(index: int, shard_size: int, num_items: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``index``."""
    start = index * shard_size
    return start, min(start + shard_size, num_items)


def num_shards(num_items: int, shard_size: int) -> int:
    """How many shards ``num_items`` rows take (the last one may be short)."""
    return -(-num_items // shard_size)


def normalise_config(config: dict) -> dict:
    """``config`` as it reads back from JSON, so a stored and a given config compare equal."""
    return json.loads(json.dumps(config, sort_keys=True, default=str))


def new_manifest(config: dict, num_items: int, shard_size: int) -> dict:
    """The manifest of an empty store."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": normalise_config(config),
        "num_items": num_items,
        "shard_size": shard_size,
        "num_shards": num_shards(num_items, shard_size),
        "arrays": None,  # {key: {"dtype": str, "shape": [trailing dims]}}, set by the first shard
        "shards_done": 0,
        "complete": False,
    }


def read_manifest(directory: pathlib.Path) -> dict | None:
    """The manifest in ``directory``, or ``None`` when there is none."""
    path = directory / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise JaxlogitError(f"{directory} is not a logit store (bad manifest); delete it or choose another directory")
    return manifest


def write_manifest(directory: pathlib.Path, manifest: dict) -> None:
    """Writes the manifest atomically (temporary file + ``os.replace``)."""
    paths.write_json_atomic(directory / MANIFEST, manifest)


def array_layout(arrays: dict[str, np.ndarray]) -> dict:
    """``{key: {"dtype", "shape"}}`` of one shard's arrays (shape without the row axis)."""
    return {key: {"dtype": value.dtype.str, "shape": list(value.shape[1:])} for key, value in sorted(arrays.items())}


def check_key(key: str) -> None:
    """Array names become file names: letters, digits and underscores only."""
    if not _KEY_PATTERN.match(key):
        raise ValueError(f"array name {key!r} must use only letters, digits and underscores")
