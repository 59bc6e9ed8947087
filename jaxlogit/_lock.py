"""One writer per artifact: an exclusive ``fcntl.flock`` on a lock file beside it.

A second process that wants to write the same artifact (a logit store, a checkpoint) waits
for the first, with a message naming its pid, then finds the finished artifact and reuses it
instead of doing the whole job again. The kernel releases the lock when its holder exits,
however it exits (``kill -9`` included), so a stale lock never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import sys
from collections.abc import Iterator


def lock_path(artifact: str | os.PathLike) -> pathlib.Path:
    """The lock file of ``artifact``: ``.<name>.lock`` in the same folder (the artifact itself
    may not exist yet, and must not hold foreign files)."""
    artifact = pathlib.Path(artifact).expanduser().absolute()
    return artifact.with_name(f".{artifact.name}.lock")


def _holder(handle) -> str:
    handle.seek(0)
    pid = handle.read().strip()
    return f"pid {pid}" if pid else "another process"


def _acquire(path: pathlib.Path, artifact: str | os.PathLike, wait: bool, log) -> object:
    """Opens and locks ``path``; retries when the holder removed the file while we waited."""
    told = False
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                handle.close()
                raise
            if not told:
                log(f"waiting for {_holder(handle)}, which is writing {artifact} (or press Ctrl-C)")
                told = True
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


@contextlib.contextmanager
def exclusive(artifact: str | os.PathLike, *, wait: bool = True, log=None) -> Iterator[None]:
    """Holds the exclusive lock of ``artifact`` for the ``with`` block.

    The lock file holds the holder's pid and is removed on release (before unlocking, so a
    waiter that then gets the lock of the removed file notices and locks a fresh one).

    Args:
      artifact: the folder or file to be written.
      wait: block until the holder finishes (else raise ``BlockingIOError`` at once).
      log: ``log(message)`` for the "waiting" line (default: stderr).
    """
    path = lock_path(artifact)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, artifact, wait, log or (lambda m: print(m, file=sys.stderr, flush=True)))
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()
