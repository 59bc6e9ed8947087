"""One logit store built by several processes (``jaxlogit.distributed``), on a filesystem they share.

Shard ``i`` belongs to process ``i % count`` (round-robin, ``Processes.owns``); shards are whole
attack batches, so a process computes exactly the rows one process would. Each process writes its
own shards and commits each one in its own record, ``manifest.part-<index>-of-<count>.json``
(the digests of the shard's files; JSON with its own SHA-256, replaced atomically like the
manifest). When every process has written its shards, process 0 merges the records into
``manifest.json`` (the very manifest one process writes: the store is byte-identical) and deletes
them. Steps are collective (``Processes.together``): an error on one process stops them all.

Resuming is per process: a rerun (of any number of processes) skips every shard that the manifest
or any record commits and whose files pass their digest check; a process restarted after a crash
redoes only its uncommitted shards. Process 0 holds the store's lock for the whole build, process
``p > 0`` its own (``.<store>.part-<p>.lock``), so two jobs never write the same shard at once.
"""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

from jaxlogit import _digest, _lock, paths
from jaxlogit.errors import JaxlogitError
from jaxlogit.progress import EVENTS_FILE, progress_bar
from jaxlogit.store import _layout, _writer

if TYPE_CHECKING:
    from jaxlogit.distributed import Processes


def build(
    directory: pathlib.Path,
    num_items: int,
    produce_fn: _writer.ProduceFn,
    shard_size: int,
    config: dict,
    progress: bool,
    processes: Processes,
) -> None:
    """Every process: writes its shards of the store in ``directory``; process 0 then commits it.

    Arguments are those of ``store.build``; every process of the job calls this with the same ones.
    """
    wanted = _layout.new_manifest(config, num_items, shard_size)
    complete = False
    with processes.together("checking the logit store"):  # an error anywhere stops every process
        complete = _writer._complete_and_intact(directory, config, num_items, shard_size)
        if not complete:
            paths.check_writable(directory.parent)
    if not processes.failed(complete):  # every process found it whole: nothing to write
        return
    own_lock = (
        directory if processes.index == 0 else directory.with_name(f"{directory.name}.part-{processes.index}")
    )
    with _lock.exclusive(own_lock):
        with processes.together("preparing the logit store"):
            if processes.index == 0:  # repairs a damaged store, refuses a foreign folder or config
                _writer._start_or_resume(directory, config, num_items, shard_size)
                if directory.is_dir():
                    _writer._remove_temporaries(directory, parts=False)
        with processes.together("writing the logit store's shards"):
            _write_own_shards(directory, wanted, produce_fn, processes, progress)
        with processes.together("committing the logit store"):
            if processes.index == 0:
                _commit(directory, wanted, processes)


def _write_own_shards(directory, wanted: dict, produce_fn, processes: Processes, progress: bool) -> None:
    """Produces and commits (in this process's record) the shards it owns that nothing commits yet."""
    manifest = _layout.read_manifest(directory) if directory.is_dir() else None
    first = manifest["shards_done"] if manifest else 0  # the manifest's shards are everyone's
    committed, layout = _committed(directory, wanted, manifest)
    record = {**wanted, "part": [processes.index, processes.count], "digests": {}, "arrays": layout}
    todo, rows_done, rows_total = [], 0, 0
    for index in range(first, wanted["num_shards"]):
        if not processes.owns(index):
            continue
        start, stop = _layout.shard_bounds(index, wanted["shard_size"], wanted["num_items"])
        rows_total += stop - start
        digests = _intact_digests(directory, committed, index, layout)
        if digests is None:
            todo.append(index)
        else:
            record["digests"].update(digests)
            rows_done += stop - start
    if directory.is_dir():  # replaces a record of an earlier job of this size
        _write_record(directory, processes, record)
    with progress_bar(
        f"logits {directory.name} [process {processes.index}/{processes.count}]",
        rows_total,
        enabled=progress,
        completed=rows_done,
        unit="img",
        events=directory / EVENTS_FILE if processes.index == 0 else None,
    ) as advance:
        for index in todo:
            start, stop = _layout.shard_bounds(index, wanted["shard_size"], wanted["num_items"])
            arrays = _writer._checked_rows(produce_fn(start, stop), stop - start, record["arrays"])
            directory.mkdir(parents=True, exist_ok=True)
            record["digests"].update(_writer._write_shard(directory, index, arrays))
            record["arrays"] = record["arrays"] or _layout.array_layout(arrays)
            _write_record(directory, processes, record)
            advance(stop - start)


def _committed(directory: pathlib.Path, wanted: dict, manifest: dict | None) -> tuple[dict, dict | None]:
    """``(digests by shard file name, array layout)`` that the manifest and every intact record of
    this store commit (records of jobs of any size; an unreadable or foreign one is ignored)."""
    digests = dict((manifest or {}).get("digests") or {})
    layout = (manifest or {}).get("arrays")
    for path in _layout.part_records(directory):
        record = _read_record(path)
        if record is None or any(record[k] != wanted[k] for k in ("config", "num_items", "shard_size")):
            continue
        if layout is not None and record["arrays"] not in (None, layout):
            continue
        layout = layout or record["arrays"]
        digests.update(record["digests"])
    return digests, layout


def _intact_digests(directory: pathlib.Path, committed: dict, index: int, layout: dict | None) -> dict | None:
    """The digests of shard ``index``'s files if they are all committed and pass their check, else None."""
    if layout is None:
        return None
    names = {key: _layout.shard_path(directory, index, key).name for key in layout}
    if any(name not in committed for name in names.values()):
        return None
    try:
        for key in layout:
            _layout.check_shard_file(directory, {"digests": committed}, index, key)
    except _layout.DamagedStore:
        return None
    return {name: committed[name] for name in names.values()}


def _read_record(path: pathlib.Path) -> dict | None:
    """A process's commit record, or None if it is unreadable or fails its SHA-256 check."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    intact = (
        isinstance(record, dict) and record.get("format") == _layout.FORMAT and _digest.json_intact(record)
    )
    return record if intact else None


def _write_record(directory: pathlib.Path, processes: Processes, record: dict) -> None:
    path = _layout.part_path(directory, processes.index, processes.count)
    paths.write_json_atomic(path, _digest.with_json_sha256(record))


def _commit(directory: pathlib.Path, wanted: dict, processes: Processes) -> None:
    """Process 0: the manifest of the complete store from the manifest's shards and this job's
    records (what one process would have written), then the records are deleted."""
    manifest = _layout.read_manifest(directory) if directory.is_dir() else None
    digests = dict((manifest or {}).get("digests") or {})
    layout = (manifest or {}).get("arrays")
    for index in range(processes.count):
        record = _read_record(_layout.part_path(directory, index, processes.count))
        if record is None:
            continue
        if layout is not None and record["arrays"] not in (None, layout):
            raise JaxlogitError(
                f"process {index} wrote arrays {record['arrays']} into the logit store in {directory}, "
                f"the others {layout}; give every process the same data and settings, and rerun them"
            )
        digests.update(record["digests"])
        layout = layout or record["arrays"]
    names = [
        _layout.shard_path(directory, i, key).name
        for i in range(wanted["num_shards"])
        for key in layout or ()
    ]
    missing = [name for name in names if name not in digests]
    if layout is None or missing:
        raise JaxlogitError(
            f"the logit store in {directory} lacks {missing[:1] or 'its shards'} after every process wrote "
            "its shards; rerun every process to finish it"
        )
    complete = {**wanted, "arrays": layout, "shards_done": wanted["num_shards"], "complete": True}
    _layout.write_manifest(directory, {**complete, "digests": {name: digests[name] for name in names}})
    for path in _layout.part_records(directory):
        path.unlink(missing_ok=True)
