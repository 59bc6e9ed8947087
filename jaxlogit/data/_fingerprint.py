"""A split's fingerprint without loading the split: remembered by the identity of its files.

``Split.fingerprint`` reads every image; cache keys need it even when the artifact they name
(a trained backbone) is cached. A dataset whose ``DatasetSpec.sources`` names the files a split
is read from gets the fingerprint computed once and remembered in the cache (``data/``) under
those files' identity: path, device, inode, size, modification and change times. Any write to a
file changes its change time (a program cannot set it back), a copy elsewhere has another inode,
so a remembered fingerprint is only reused for the very files it was computed from.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from jaxlogit import _digest, paths

_VERSION = 1  # bump when a split's fingerprint is defined anew: remembered ones are then ignored
_RACY_NS = 2_000_000_000  # file timestamps are coarse: a file changed this recently is not remembered


def _identity(path: pathlib.Path) -> list:
    """What changes whenever the file at ``path`` (or what it points to) does."""
    st = path.stat()
    return [str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _remembered(record: pathlib.Path, key: dict) -> str | None:
    """The fingerprint stored in ``record`` for ``key``, if it is there and intact."""
    try:
        stored = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or not _digest.json_intact(stored):
        return None
    same = all(stored.get(field) == value for field, value in key.items())  # not a hash collision
    return stored.get("fingerprint") if same and isinstance(stored.get("fingerprint"), str) else None


def split_fingerprint(spec, split: str, data_dir: str | os.PathLike | None = None, *, cache=None) -> str:
    """``spec.load(split, data_dir).fingerprint``, loading the split only when its files' fingerprint
    is not remembered in the cache ``cache`` (None: the default cache root).

    Args:
      spec: a ``DatasetSpec``; without ``sources`` (or when they name no files) the split is loaded.
      split: one of its splits.
      data_dir: where the data is (as for ``spec.load``).
      cache: the cache root.
    """
    files = spec.sources(split, data_dir) if spec.sources is not None else None
    if not files:
        return spec.load(split, data_dir).fingerprint
    started = time.time_ns()
    identity = [_identity(pathlib.Path(f)) for f in files]
    key = {"version": _VERSION, "files": identity}
    record = paths.artifact_dir("data", f"{spec.name}-{split}-fingerprint", key, cache) / "fingerprint.json"
    remembered = _remembered(record, key)
    if remembered is not None:
        return remembered
    fingerprint = spec.load(split, data_dir).fingerprint
    settled = all(max(i[4], i[5]) + _RACY_NS < started for i in identity)
    if settled and [_identity(pathlib.Path(f)) for f in files] == identity:
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            paths.write_json_atomic(record, _digest.with_json_sha256({**key, "fingerprint": fingerprint}))
        except OSError:  # a read-only cache: computed again next time
            pass
    return fingerprint
