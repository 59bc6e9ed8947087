"""Reading a logit store: arrays by name, memory-mapped shard by shard."""

from __future__ import annotations

import math
import os
import pathlib

import numpy as np

from jaxlogit import paths
from jaxlogit.errors import JaxlogitError
from jaxlogit.store import _layout

SMALL_ARRAY_BYTES = 1 << 24
"""``LogitStore.rows`` reads an array of at most this many bytes (16 MiB) whole, once, and keeps it
(Fashion-MNIST's 60,000 x 10 logits: 2.4 MB); a larger one row by row."""


class LogitStore:
    """A logit store opened for reading (see ``jaxlogit.store``); use ``store.open``.

    ``store[key]`` is the whole array (N, ...) of the complete shards: a read-only memory map
    when the store has one shard, else their concatenation (which reads them into memory).
    ``store.rows(key, indices)`` reads only the rows asked for, whatever the store's size: what
    code that may meet a training-sized store uses, with ``store.shape(key)`` and
    ``store.dtype(key)`` (from the manifest, reading no shard). ``store.shard(key, i)`` is always
    a memory map. Each shard file is checked against the SHA-256 digest in the manifest the first
    time it is read (``DamagedStore`` on a mismatch); a file this process checked before and that
    has not changed since is not hashed again.

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
        self._data_offsets: dict[tuple[str, int], int] = {}
        self._small: dict[str, np.ndarray] = {}  # arrays of at most SMALL_ARRAY_BYTES, read whole

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

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of array ``key`` over the complete shards, ``(len(self), ...)``, from the manifest."""
        self._check_key(key)
        return (len(self), *self._manifest["arrays"][key]["shape"])

    def dtype(self, key: str) -> np.dtype:
        """Dtype of array ``key``, from the manifest."""
        self._check_key(key)
        return np.dtype(self._manifest["arrays"][key]["dtype"])

    def rows(self, key: str, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (n,) of array ``key``, in that order: (n, ...), a new array.

        An array of at most ``SMALL_ARRAY_BYTES`` is read whole once and kept; a larger one is
        read row by row from the shard files (consecutive rows of a shard in one read), so
        memory holds the result and nothing else of it.

        Raises:
          IndexError: an index outside ``[0, len(self))``.
        """
        indices = _checked_indices(indices, self.shape(key)[0])
        if self._nbytes(key) <= SMALL_ARRAY_BYTES:
            if key not in self._small:
                self._small[key] = np.array(self[key])
            return self._small[key][indices]
        return self._read_rows(key, indices)

    def _nbytes(self, key: str) -> int:
        """Bytes of array ``key`` over the complete shards."""
        return self.dtype(key).itemsize * math.prod(self.shape(key))

    def _read_rows(self, key: str, indices: np.ndarray) -> np.ndarray:
        """Rows ``indices`` (n,) of ``key`` read from the shard files: one ``pread`` per run of
        consecutive rows, each file opened once."""
        trailing, dtype = self.shape(key)[1:], self.dtype(key)
        out = np.empty((len(indices), *trailing), dtype)
        row_bytes = dtype.itemsize * math.prod(trailing)
        order = np.argsort(indices, kind="stable")
        sorted_rows = indices[order]
        fd, fd_index = None, None
        try:
            for first, stop in _runs(sorted_rows, self.shard_size):
                index, local = divmod(int(sorted_rows[first]), self.shard_size)
                if index != fd_index:
                    offset = self._data_offset(key, index)  # checks the file on first use
                    if fd is not None:
                        os.close(fd)
                    fd, fd_index = None, index
                    fd = os.open(_layout.shard_path(self.directory, index, key), os.O_RDONLY)
                size = (stop - first) * row_bytes
                data = os.pread(fd, size, offset + local * row_bytes)
                if len(data) != size:
                    path = _layout.shard_path(self.directory, index, key)
                    raise _layout.DamagedStore(
                        f"the logit store shard {path} is truncated; {_layout.REBUILD}"
                    )
                out[order[first:stop]] = np.frombuffer(data, dtype).reshape(stop - first, *trailing)
        finally:
            if fd is not None:
                os.close(fd)
        return out

    def _data_offset(self, key: str, index: int) -> int:
        """Where shard ``index``'s rows of ``key`` begin in its file (after the ``.npy`` header);
        the file is checked (digest, header) on first use."""
        if (key, index) not in self._data_offsets:
            mapped = self.shard(key, index)  # checks the digest; numpy parses the header
            start, stop = _layout.shard_bounds(index, self.shard_size, self.num_items)
            if mapped.shape != (stop - start, *self.shape(key)[1:]) or mapped.dtype != self.dtype(key):
                path = _layout.shard_path(self.directory, index, key)
                raise _layout.DamagedStore(
                    f"the logit store shard {path} holds {mapped.dtype} {mapped.shape}, not what its "
                    f"manifest says; {_layout.REBUILD}"
                )
            self._data_offsets[(key, index)] = mapped.offset
        return self._data_offsets[(key, index)]

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


def _checked_indices(indices, num_rows: int) -> np.ndarray:
    """``indices`` as int64 (n,), each in ``[0, num_rows)``."""
    indices = np.asarray(indices)
    if indices.ndim != 1 or not (indices.size == 0 or np.issubdtype(indices.dtype, np.integer)):
        raise IndexError(f"row indices must be integers of shape (n,), got {indices.dtype} {indices.shape}")
    indices = indices.astype(np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= num_rows):
        raise IndexError(f"row indices must lie in [0, {num_rows}), got [{indices.min()}, {indices.max()}]")
    return indices


def _runs(sorted_rows: np.ndarray, shard_size: int) -> list[tuple[int, int]]:
    """``[first, stop)`` positions of the runs of consecutive rows within one shard in ``sorted_rows``."""
    if sorted_rows.size == 0:
        return []
    breaks = (np.diff(sorted_rows) != 1) | (sorted_rows[1:] % shard_size == 0)
    edges = [0, *(np.flatnonzero(breaks) + 1).tolist(), len(sorted_rows)]
    return list(zip(edges[:-1], edges[1:]))


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
