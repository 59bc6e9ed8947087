"""Reading a logit store: arrays by name, memory-mapped shard by shard."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from jaxlogit import paths
from jaxlogit.errors import JaxlogitError
from jaxlogit.store import _layout


class LogitStore:
    """A logit store opened for reading (see ``jaxlogit.store``); use ``store.open``.

    ``store[key]`` is the whole array (N, ...) of the complete shards: a read-only memory map
    when the store has one shard, else their concatenation (which reads them into memory).
    ``store.shard(key, i)`` is always a memory map. Each shard file is checked against the
    SHA-256 digest in the manifest the first time it is read (``DamagedStore`` on a mismatch).

    Attributes:
      directory: where the store lives.
      config: the configuration it was built with.
      complete: whether every shard is written (``open`` refuses incomplete stores unless asked).
      num_items: the number of rows the finished store has.
      shard_size: rows per shard.
    """

    def __init__(self, directory: pathlib.Path, manifest: dict):
        self.directory = directory
        self._manifest = manifest
        self.config: dict = manifest["config"]
        self.complete: bool = manifest["complete"]
        self.num_items: int = manifest["num_items"]
        self.shard_size: int = manifest["shard_size"]
        self._verified: set[tuple[str, int]] = set()

    @property
    def num_shards(self) -> int:
        """Number of complete shards."""
        return self._manifest["shards_done"]

    def keys(self) -> tuple[str, ...]:
        """Names of the stored arrays, sorted."""
        return tuple(sorted(self._manifest["arrays"] or ()))

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def __len__(self) -> int:
        """Rows in the complete shards (``num_items`` when the store is complete)."""
        return min(self.num_shards * self.shard_size, self.num_items)

    def shard(self, key: str, index: int) -> np.ndarray:
        """Array ``key`` of shard ``index``, memory-mapped read-only: (rows of the shard, ...)."""
        self._check_key(key)
        if not 0 <= index < self.num_shards:
            raise IndexError(f"shard {index} out of range [0, {self.num_shards})")
        path = _layout.shard_path(self.directory, index, key)
        if (key, index) not in self._verified:
            _layout.check_shard_file(self.directory, self._manifest, index, key)
            self._verified.add((key, index))
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            if paths.filesystem_fault(err):
                raise
            raise _layout.DamagedStore(
                f"the logit store shard {path} cannot be read ({err}); {_layout.REBUILD}"
            ) from None

    def __getitem__(self, key: str) -> np.ndarray:
        """Array ``key`` over all complete shards: (len(self), ...)."""
        self._check_key(key)
        parts = [self.shard(key, i) for i in range(self.num_shards)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def _check_key(self, key: str) -> None:
        if key not in self.keys():
            raise KeyError(f"the logit store has no array {key!r}; it holds {list(self.keys())}")

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"{self.num_shards}/{self._manifest['num_shards']} shards"
        return f"LogitStore({str(self.directory)!r}, {len(self)} rows, {state}, keys={list(self.keys())})"


def open_store(directory: str | os.PathLike, *, allow_incomplete: bool = False) -> LogitStore:
    """Opens the logit store in ``directory`` for reading.

    Args:
      directory: a directory written by ``store.build``.
      allow_incomplete: open a store whose build was interrupted (reads its complete shards).

    Raises:
      JaxlogitError: no store there, or the store is incomplete and ``allow_incomplete`` is False.
    """
    directory = pathlib.Path(directory)
    manifest = _layout.read_manifest(directory) if directory.is_dir() else None
    if manifest is None:
        raise JaxlogitError(
            f"no logit store in {directory}; run the command that makes it (jaxlogit logits ...)"
        )
    if not manifest["complete"] and not allow_incomplete:
        done, total = manifest["shards_done"], manifest["num_shards"]
        raise JaxlogitError(
            f"the logit store in {directory} is incomplete ({done}/{total} shards); rerun the command "
            "that makes it to finish it"
        )
    return LogitStore(directory, manifest)


def is_complete(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a complete logit store (a cheap check for caches; a damaged
    manifest counts as incomplete: ``build`` repairs it)."""
    directory = pathlib.Path(directory)
    try:
        manifest = _layout.read_manifest(directory) if directory.is_dir() else None
    except _layout.DamagedStore:
        return False
    return bool(manifest and manifest["complete"])


def shard_size_of(directory: str | os.PathLike) -> int | None:
    """Rows per shard of the store in ``directory``, complete or not; None when there is none (or its
    manifest is damaged: ``build`` starts it again). A builder that reuses it resumes its layout."""
    directory = pathlib.Path(directory)
    try:
        manifest = _layout.read_manifest(directory) if directory.is_dir() else None
    except _layout.DamagedStore:
        return None
    return int(manifest["shard_size"]) if manifest else None
