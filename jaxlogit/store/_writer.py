"""Writing a logit store shard by shard, atomically, resuming after a crash."""

from __future__ import annotations

import os
import pathlib
from typing import Callable, Mapping

import numpy as np

from jaxlogit.errors import JaxlogitError
from jaxlogit.progress import EVENTS_FILE, progress_bar
from jaxlogit.store import _layout
from jaxlogit.store._reader import LogitStore, open_store

DEFAULT_SHARD_SIZE = 1024

ProduceFn = Callable[[int, int], Mapping[str, np.ndarray]]


def build(
    directory: str | os.PathLike,
    num_items: int,
    produce_fn: ProduceFn,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    config: dict,
    progress: bool = True,
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

    Returns:
      The complete store, opened for reading.

    Raises:
      JaxlogitError: ``directory`` holds another store or something that is not a store.
    """
    if num_items < 1 or shard_size < 1:
        raise JaxlogitError(f"a logit store needs num_items >= 1 and shard_size >= 1 (got {num_items}, {shard_size})")
    directory = pathlib.Path(directory)
    manifest = _start_or_resume(directory, config, num_items, shard_size)
    done_rows = min(manifest["shards_done"] * shard_size, num_items)
    with progress_bar(f"logits {directory.name}", num_items, enabled=progress, completed=done_rows,
                      unit="img", events=directory / EVENTS_FILE) as advance:
        for index in range(manifest["shards_done"], manifest["num_shards"]):
            start, stop = _layout.shard_bounds(index, shard_size, num_items)
            arrays = _checked_rows(produce_fn(start, stop), stop - start, manifest["arrays"])
            _write_shard(directory, index, arrays)
            manifest = _commit_shard(manifest, arrays)
            _layout.write_manifest(directory, manifest)
            advance(stop - start)
    return open_store(directory)


def _start_or_resume(directory: pathlib.Path, config: dict, num_items: int, shard_size: int) -> dict:
    """The manifest to continue from: the existing one if it matches, else a fresh one."""
    wanted = _layout.new_manifest(config, num_items, shard_size)
    existing = _layout.read_manifest(directory) if directory.is_dir() else None
    if existing is None:
        _check_empty(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _layout.write_manifest(directory, wanted)
        return wanted
    identity = ("config", "num_items", "shard_size")
    if any(existing[k] != wanted[k] for k in identity):
        raise JaxlogitError(
            f"the logit store in {directory} was made with another configuration; delete it or choose another directory"
        )
    return existing


def _check_empty(directory: pathlib.Path) -> None:
    """Refuses to write a store into a directory holding anything but leftover temporaries."""
    if not directory.is_dir():
        return
    foreign = [p.name for p in directory.iterdir() if not p.name.endswith(".tmp")]
    if foreign:
        raise JaxlogitError(f"{directory} is not empty and not a logit store; delete it or choose another directory")


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
            raise ValueError(f"produce_fn returned {key} with shape {out[key].shape}; its leading dimension must be {rows}")
    if layout is not None and _layout.array_layout(out) != layout:
        raise ValueError(f"produce_fn returned {_layout.array_layout(out)}, but earlier shards hold {layout}")
    return out


def _write_shard(directory: pathlib.Path, index: int, arrays: dict[str, np.ndarray]) -> None:
    """Writes every array of shard ``index``, each one atomically."""
    for key, value in arrays.items():
        _save_npy_atomic(_layout.shard_path(directory, index, key), value)


def _save_npy_atomic(path: pathlib.Path, array: np.ndarray) -> None:
    """``np.save`` to a temporary file, flushed to disk, then ``os.replace``d onto ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _commit_shard(manifest: dict, arrays: dict[str, np.ndarray]) -> dict:
    """The manifest after one more shard (a new dict; the caller writes it)."""
    done = manifest["shards_done"] + 1
    layout = manifest["arrays"] or _layout.array_layout(arrays)
    return {**manifest, "arrays": layout, "shards_done": done, "complete": done == manifest["num_shards"]}
