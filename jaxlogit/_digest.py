"""SHA-256 digests of the files jaxlogit writes, checked when they are read back.

A flipped byte in a checkpoint or a logit-store shard must be an error, never a silently wrong
accuracy. Writers record the digest of what they wrote; readers recompute and compare.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Iterable

import numpy as np

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(directory: str | os.PathLike) -> str:
    """Hex SHA-256 of every file under ``directory``: relative paths and contents, sorted."""
    directory = pathlib.Path(directory)
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def arrays_sha256(arrays: Iterable) -> str:
    """Hex SHA-256 of array values: each array's dtype, shape and bytes, in order.

    Args:
      arrays: numpy (or jax) arrays of any shapes, e.g. a split's images ``(N, H, W, C)`` and labels ``(N,)``.
    """
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def json_sha256(record: dict, field: str = "sha256") -> str:
    """Hex SHA-256 of ``record`` as canonical JSON, leaving out its own digest ``field``."""
    body = {k: v for k, v in record.items() if k != field}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def with_json_sha256(record: dict, field: str = "sha256") -> dict:
    """``record`` as it reads back from JSON, with ``field`` set to the digest of the rest of it."""
    record = json.loads(json.dumps(record, default=str))
    return {**record, field: json_sha256(record, field)}


def json_intact(record: dict, field: str = "sha256") -> bool:
    """Whether ``record``'s digest ``field`` matches its contents (True when it has none:
    records written before digests existed are accepted)."""
    return field not in record or record[field] == json_sha256(record, field)
