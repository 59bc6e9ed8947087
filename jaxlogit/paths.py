"""Where jaxlogit reads data and keeps its cached artifacts.

Artifacts (trained backbones, logit stores, correctors) live under the cache root,
``$JAXLOGIT_CACHE`` or ``~/.cache/jaxlogit``, each in a folder named by its configuration.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import uuid

from jaxlogit.errors import JaxlogitError


def cache_root(override: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache root: ``override``, else ``$JAXLOGIT_CACHE``, else ``~/.cache/jaxlogit``.

    Raises:
      JaxlogitError: ``override`` is empty, or the root exists and is not a directory.
    """
    if override is not None and not str(override).strip():
        raise JaxlogitError("--cache-dir is empty: pass a folder (or leave it out for ~/.cache/jaxlogit)")
    if override is not None:
        root = pathlib.Path(override).expanduser()
    elif os.environ.get("JAXLOGIT_CACHE"):
        root = pathlib.Path(os.environ["JAXLOGIT_CACHE"]).expanduser()
    else:
        root = pathlib.Path("~/.cache/jaxlogit").expanduser()
    if root.exists() and not root.is_dir():
        raise JaxlogitError(f"the cache folder {root} is a file, not a folder: pass another --cache-dir")
    return root


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-serialisable configuration (10 hex digits)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def artifact_dir(kind: str, name: str, config: dict, root: str | os.PathLike | None = None) -> pathlib.Path:
    """``<cache>/<kind>/<name>-<hash(config)>``: the folder of one cached artifact."""
    return cache_root(root) / kind / f"{name}-{config_hash(config)}"


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace``: readers see the old
    file or the whole new one, never half of it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace``."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def temporary_sibling(path: str | os.PathLike) -> pathlib.Path:
    """A fresh name beside ``path`` for writing it atomically: ``.<name>.<pid>-<random>.tmp``.

    The pid and random suffix keep two writers (processes or threads) from sharing a name.
    """
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def check_writable(directory: str | os.PathLike, what: str = "--cache-dir") -> pathlib.Path:
    """Raises a one-line error unless ``directory`` (or, if missing, its nearest existing
    ancestor) is a folder this process may create files in. Returns ``directory`` as a path.

    Checked before long work so that a read-only target fails at once, not after it.
    """
    directory = pathlib.Path(directory).expanduser().absolute()
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise JaxlogitError(f"cannot write to {directory}: {existing} is not a folder; choose another {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JaxlogitError(f"cannot write to {directory}: {existing} is read-only; choose another {what}")
    return directory


#: ``errno`` values of filesystem faults the CLI reports in one line, with the fix.
FILESYSTEM_FAULTS = {
    errno.ENOSPC: "the disk is full: free space or choose another --cache-dir",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another --cache-dir",
    errno.EROFS: "the file system is read-only: choose another --cache-dir or --out",
    errno.EACCES: "permission denied: choose a folder you can write (--cache-dir, --out)",
    errno.EPERM: "operation not permitted: choose a folder you can write (--cache-dir, --out)",
    errno.ENOTDIR: "a path component is a file, not a folder: choose another --cache-dir or --out",
    errno.EISDIR: "a folder is in the way of a file: choose another path",
}


def filesystem_fault(err: BaseException) -> str | None:
    """A one-line description of a filesystem ``OSError`` (its file and the fix), else None.

    Looks through ``__cause__``/``__context__`` too: libraries (orbax) wrap the ``OSError``.
    """
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno in FILESYSTEM_FAULTS:
            where = f" ({err.filename})" if err.filename else ""
            return f"{os.strerror(err.errno)}{where}; {FILESYSTEM_FAULTS[err.errno]}"
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None
