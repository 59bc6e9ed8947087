"""File names, the manifest and its checks: what writer and reader agree on."""

from __future__ import annotations

import json
import pathlib
import re
import time

import numpy as np

from jaxlogit import _digest, paths
from jaxlogit.errors import JaxlogitError

FORMAT = "jaxlogit.logit_store"
#: 2 adds SHA-256 digests: ``digests`` (shard file name -> digest) and ``sha256`` (of the
#: manifest itself). Version 1 stores, which have neither, are still read, unverified.
VERSION = 2
MANIFEST = "manifest.json"
PART_PREFIX = "manifest.part-"  # the commit records of processes building a store together (_shared)
REBUILD = "rerun the command that made it (e.g. `jaxlogit logits ...`) to rebuild it"

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


def part_path(directory: pathlib.Path, index: int, count: int) -> pathlib.Path:
    """The commit record of process ``index`` of ``count`` building the store together."""
    return directory / f"{PART_PREFIX}{index:05d}-of-{count:05d}.json"


def part_records(directory: pathlib.Path) -> list[pathlib.Path]:
    """Every process's commit record in ``directory`` (whatever the job's size), sorted."""
    return sorted(directory.glob(f"{PART_PREFIX}*.json")) if directory.is_dir() else []


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
        "digests": {},  # {shard file name: SHA-256 hex}, one entry per committed file
    }


def read_manifest(directory: pathlib.Path) -> dict | None:
    """The manifest in ``directory``, or ``None`` when there is none.

    Raises:
      DamagedStore: the manifest cannot be parsed or fails its SHA-256 check.
      JaxlogitError: it is some other program's JSON file.
    """
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        fmt = manifest.get("format")
    except (ValueError, AttributeError):
        raise DamagedStore(f"the logit store manifest {path} is damaged (not JSON); {REBUILD}") from None
    if fmt != FORMAT:
        raise JaxlogitError(
            f"{directory} is not a logit store (bad manifest); delete it or choose another directory"
        )
    if not _digest.json_intact(manifest):
        raise DamagedStore(f"the logit store manifest {path} is damaged (SHA-256 mismatch); {REBUILD}")
    return manifest


def write_manifest(directory: pathlib.Path, manifest: dict) -> None:
    """Writes the manifest with its own digest, atomically (temporary file + ``os.replace``)."""
    paths.write_json_atomic(directory / MANIFEST, _digest.with_json_sha256(manifest))


class DamagedStore(JaxlogitError):
    """A store file fails its SHA-256 check or cannot be read; ``store.build`` repairs it."""


def check_shard_file(directory: pathlib.Path, manifest: dict, index: int, key: str) -> pathlib.Path:
    """The path of shard ``index``'s ``key`` file, after checking it against its digest (when the
    manifest records one: version 1 stores have none).

    Raises:
      DamagedStore: the file is missing or its bytes changed since it was written.
    """
    path = shard_path(directory, index, key)
    expected = (manifest.get("digests") or {}).get(path.name)
    if not path.is_file():
        raise DamagedStore(f"the logit store shard {path} is missing; {REBUILD}")
    if expected is not None and not _verified_before(path, expected):
        started = time.time_ns()
        signature = _file_signature(path)
        if _digest.file_sha256(path) != expected:
            raise DamagedStore(f"the logit store shard {path} is damaged (SHA-256 mismatch); {REBUILD}")
        _VERIFIED[str(path.absolute())] = (expected, signature, started)
    return path


#: Shard files this process has checked: absolute path -> (digest, file signature, when the check
#: began, ns). A file is hashed again when its signature changed, or when it was modified too close
#: to its check for the signature to tell (git's "racily clean" entries).
_VERIFIED: dict[str, tuple[str, tuple, int]] = {}
_RACY_NS = 2_000_000_000  # file timestamps are coarse (a jiffy locally, up to 2 s on some filesystems)


def _file_signature(path: pathlib.Path) -> tuple:
    """What changes whenever a file's bytes do: device, inode, size, modification and change times
    (the change time cannot be set back by a program, unlike the modification time)."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _verified_before(path: pathlib.Path, expected: str) -> bool:
    """Whether this process already checked ``path`` against ``expected`` and it has not changed since."""
    record = _VERIFIED.get(str(path.absolute()))
    if record is None:
        return False
    digest, signature, started = record
    current = _file_signature(path)
    settled = max(current[3], current[4]) + _RACY_NS < started
    return digest == expected and signature == current and settled


def array_layout(arrays: dict[str, np.ndarray]) -> dict:
    """``{key: {"dtype", "shape"}}`` of one shard's arrays (shape without the row axis)."""
    return {
        key: {"dtype": value.dtype.str, "shape": list(value.shape[1:])}
        for key, value in sorted(arrays.items())
    }


def check_key(key: str) -> None:
    """Array names become file names: letters, digits and underscores only."""
    if not _KEY_PATTERN.match(key):
        raise ValueError(f"array name {key!r} must use only letters, digits and underscores")
