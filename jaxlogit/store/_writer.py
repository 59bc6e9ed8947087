"""Writing a logit store shard by shard, atomically, resuming after a crash."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from jaxlogit import _digest, _lock, paths
from jaxlogit.errors import JaxlogitError
from jaxlogit.progress import EVENTS_FILE, progress_bar
from jaxlogit.store import _layout
from jaxlogit.store._reader import LogitStore, open_store

if TYPE_CHECKING:
    from jaxlogit.distributed import Processes

DEFAULT_SHARD_SIZE = 1024

ProduceFn = Callable[[int, int], Mapping[str, np.ndarray]]
_IDENTITY = ("config", "num_items", "shard_size")  # what makes a store the one asked for


def build(
    directory: str | os.PathLike,
    num_items: int,
    produce_fn: ProduceFn,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    config: dict,
    progress: bool = True,
    processes: Processes | None = None,
) -> LogitStore:
    """Builds (or finishes) the store in ``directory`` and opens it.

    Shards are produced and written one at a time, so memory holds one shard whatever
    ``num_items`` is. If ``directory`` holds a partial store made with the same ``config``,
    ``num_items`` and ``shard_size``, building resumes after its last complete shard; a
    complete one is opened as it is.

    Args:
      directory: where the store lives (created if missing).
      num_items: number of rows N (images).
      produce_fn: ``produce_fn(start, stop)`` returns the rows ``[start, stop)`` as a dict of
        arrays with leading dimension ``stop - start``: ``clean_logits`` (n, C) float32,
        ``adv_logits`` (n, C) float32, ``labels`` (n,) int32, ``success`` (n,) bool,
        ``norm`` (n,) float32, plus any other keys. It must be deterministic in
        ``(start, stop)`` for a resumed store to equal an uninterrupted one.
      shard_size: rows per shard (the last shard may be shorter).
      config: JSON-serialisable description of what is stored (backbone, attack, split, ...);
        a store made with another config is never resumed.
      progress: report progress (``jaxlogit.progress``) and log events to ``directory/events.jsonl``.
      processes: this process's place in a job of several (``jaxlogit.distributed.processes()``);
        each then writes its own shards and process 0 commits the manifest (``store._shared``).
        Every process of the job must call ``build`` with the same arguments. None: one process.

    Returns:
      The complete store, opened for reading.

    Raises:
      JaxlogitError: ``directory`` holds another store or something that is not a store.
    """
    if num_items < 1 or shard_size < 1:
        raise JaxlogitError(
            f"a logit store needs num_items >= 1 and shard_size >= 1 (got {num_items}, {shard_size})"
        )
    directory = pathlib.Path(directory)
    if processes is not None:
        from jaxlogit.store import _shared  # it builds on this module's helpers

        _shared.build(directory, num_items, produce_fn, shard_size, config, progress, processes)
    elif not _complete_and_intact(directory, config, num_items, shard_size):  # else: no lock, no write
        paths.check_writable(directory.parent)
        with _lock.exclusive(directory):
            manifest = _start_or_resume(directory, config, num_items, shard_size)
            if not manifest["complete"]:
                _write_missing_shards(directory, manifest, produce_fn, progress)
    store = open_store(directory)
    store._verified.update((key, i) for key in store.keys() for i in range(store.num_shards))
    return store


def _complete_and_intact(directory: pathlib.Path, config: dict, num_items: int, shard_size: int) -> bool:
    """Whether ``directory`` holds the complete store asked for, every file passing its check."""
    wanted = _layout.new_manifest(config, num_items, shard_size)
    try:
        manifest = _layout.read_manifest(directory) if directory.is_dir() else None
        if not manifest or not manifest["complete"] or any(manifest[k] != wanted[k] for k in _IDENTITY):
            return False
        for index in range(manifest["shards_done"]):
            for key in manifest["arrays"] or ():
                _layout.check_shard_file(directory, manifest, index, key)
    except _layout.DamagedStore:
        return False
    return True


def _write_missing_shards(
    directory: pathlib.Path, manifest: dict, produce_fn: ProduceFn, progress: bool
) -> None:
    """Produces and commits the shards after ``manifest["shards_done"]``. A run that fails before
    its first shard is committed removes the store folder it created."""
    paths.check_writable(directory)
    created = not directory.exists()
    if not created:
        _remove_temporaries(directory)
    num_items, shard_size = manifest["num_items"], manifest["shard_size"]
    done_rows = min(manifest["shards_done"] * shard_size, num_items)
    try:
        with progress_bar(
            f"logits {directory.name}",
            num_items,
            enabled=progress,
            completed=done_rows,
            unit="img",
            events=directory / EVENTS_FILE,
        ) as advance:
            for index in range(manifest["shards_done"], manifest["num_shards"]):
                start, stop = _layout.shard_bounds(index, shard_size, num_items)
                arrays = _checked_rows(produce_fn(start, stop), stop - start, manifest["arrays"])
                if index == 0:  # the first data exists: only now does the store appear on disk
                    directory.mkdir(parents=True, exist_ok=True)
                    _layout.write_manifest(directory, manifest)
                digests = _write_shard(directory, index, arrays)
                manifest = _commit_shard(manifest, arrays, digests)
                _layout.write_manifest(directory, manifest)
                advance(stop - start)
    except BaseException:
        if created and manifest["shards_done"] == 0:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _start_or_resume(directory: pathlib.Path, config: dict, num_items: int, shard_size: int) -> dict:
    """The manifest to continue from: the existing one if it matches (cut back to before its
    first damaged shard), else a fresh one (not yet written)."""
    wanted = _layout.new_manifest(config, num_items, shard_size)
    try:
        existing = _layout.read_manifest(directory) if directory.is_dir() else None
    except _layout.DamagedStore as err:
        _discard_damaged(directory, err)
        existing = None
    if existing is None:
        _check_empty(directory)
        return wanted
    if any(existing[k] != wanted[k] for k in _IDENTITY):
        raise JaxlogitError(
            f"the logit store in {directory} was made with another configuration; delete it or choose "
            "another directory"
        )
    return _cut_at_damage(directory, existing)


def _cut_at_damage(directory: pathlib.Path, manifest: dict) -> dict:
    """``manifest`` without its first damaged shard and those after it (rewritten on disk)."""
    for index in range(manifest["shards_done"]):
        for key in manifest["arrays"] or ():
            try:
                _layout.check_shard_file(directory, manifest, index, key)
            except _layout.DamagedStore as err:
                print(f"warning: {str(err).split(';')[0]}; rewriting shards {index}+", file=sys.stderr)
                names = {
                    _layout.shard_path(directory, i, k).name
                    for i in range(index, manifest["num_shards"])
                    for k in manifest["arrays"]
                }
                digests = {n: d for n, d in (manifest.get("digests") or {}).items() if n not in names}
                manifest = {**manifest, "shards_done": index, "complete": False, "digests": digests}
                paths.check_writable(directory)
                _layout.write_manifest(directory, manifest)
                return manifest
    return manifest


def _discard_damaged(directory: pathlib.Path, err: Exception) -> None:
    """Removes a store whose manifest is damaged, if the folder holds only store files."""
    if any(not _is_store_file(p.name) for p in directory.iterdir()):
        raise err
    print(f"warning: {str(err).split(';')[0]}; rebuilding the store", file=sys.stderr)
    for path in directory.iterdir():
        path.unlink()


def _is_store_file(name: str) -> bool:
    shard = name.startswith("shard-") and name.endswith(".npy")
    part = name.startswith(_layout.PART_PREFIX) and name.endswith(".json")
    return name == _layout.MANIFEST or name.endswith(".tmp") or shard or part


def _remove_temporaries(directory: pathlib.Path, *, parts: bool = True) -> None:
    """Deletes the temporary files of writers that died (the lock says none is running) and, with
    ``parts``, the commit records of an unfinished build by several processes (one process redoes it)."""
    for path in directory.iterdir():
        stale = path.name.endswith(".tmp") or parts and path.name.startswith(_layout.PART_PREFIX)
        if stale and path.is_file():
            path.unlink(missing_ok=True)


def _check_empty(directory: pathlib.Path) -> None:
    """Refuses to write a store into a directory holding anything but leftover temporaries, the
    event log of an earlier attempt and the shards and records of several processes' unfinished build."""
    if not directory.is_dir():
        return
    foreign = [p.name for p in directory.iterdir() if not _is_store_file(p.name) and p.name != EVENTS_FILE]
    if foreign:
        raise JaxlogitError(
            f"{directory} is not empty and not a logit store; delete it or choose another directory"
        )


def _checked_rows(arrays: Mapping[str, np.ndarray], rows: int, layout: dict | None) -> dict[str, np.ndarray]:
    """``produce_fn``'s output as numpy arrays in their stored dtypes, checked against the layout."""
    missing = sorted(set(_layout.REQUIRED_DTYPES) - set(arrays))
    if missing:
        raise ValueError(f"produce_fn must return the arrays {missing}")
    out = {}
    for key, value in arrays.items():
        _layout.check_key(key)
        dtype = _layout.REQUIRED_DTYPES.get(key)
        out[key] = np.ascontiguousarray(np.asarray(value, dtype=dtype))
        if out[key].ndim == 0 or out[key].shape[0] != rows:
            raise ValueError(
                f"produce_fn returned {key} with shape {out[key].shape}; its leading dimension must be {rows}"
            )
    if layout is not None and _layout.array_layout(out) != layout:
        raise ValueError(f"produce_fn returned {_layout.array_layout(out)}, but earlier shards hold {layout}")
    return out


def _write_shard(directory: pathlib.Path, index: int, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """Writes every array of shard ``index``, each one atomically; returns their digests by file name."""
    digests = {}
    for key, value in arrays.items():
        path = _layout.shard_path(directory, index, key)
        _save_npy_atomic(path, value)
        digests[path.name] = _digest.file_sha256(path)
    return digests


def _save_npy_atomic(path: pathlib.Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file (a name of this writer's own), flushed to disk, then
    ``os.replace``d onto ``path``; the temporary file is removed if anything fails."""
    tmp = paths.temporary_sibling(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _commit_shard(manifest: dict, arrays: dict[str, np.ndarray], digests: dict[str, str]) -> dict:
    """The manifest after one more shard (a new dict; the caller writes it)."""
    done = manifest["shards_done"] + 1
    layout = manifest["arrays"] or _layout.array_layout(arrays)
    return {
        **manifest,
        "arrays": layout,
        "shards_done": done,
        "complete": done == manifest["num_shards"],
        "digests": {**(manifest.get("digests") or {}), **digests},
    }
