"""Ctrl-C in the command line: one line, exit status 130, no traceback, no crash.

Python's default turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread happens to
be: in the middle of an import (a raw traceback), or while XLA's threads still run device work
and the interpreter tears down under them (a segmentation fault). Instead, the handler
installed here writes one line and ends the process with ``os._exit(130)``: no teardown runs,
so nothing can crash, and every artifact jaxlogit writes is replaced atomically (temporary file
or folder + rename), so an interrupted run leaves what a ``kill -9`` would: whole shards and
checkpoints that the rerun resumes from.

Uses only the standard library: ``jaxlogit.__main__`` installs it before importing jax.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

MESSAGE = "interrupted: rerun the same command to resume where it stopped"


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:
        pass


def exit_interrupted(signum=None, frame=None) -> None:
    """Ends the process at once: cursor back on, pending output flushed, one line, status 130."""
    del signum, frame
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a reentrant flush (the handler interrupted a write) is not worth a traceback
            pass
    if os.isatty(1):
        _write(1, "\x1b[?25h\n")  # rich hides the cursor while a progress bar is live
    _write(2, MESSAGE + "\n")
    os._exit(130)


def install():
    """Makes SIGINT end the process with one line and status 130; returns the previous handler
    (None when not called from the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, exit_interrupted)


def restore(previous) -> None:
    """Puts back the handler ``install`` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)


def finish(code: int) -> None:
    """Ends a finished command with ``code`` without the interpreter's teardown.

    Python's finalisation puts SIGINT's default action back (death by signal, status -2) while
    XLA's threads are still being joined, so a Ctrl-C during that teardown would not get the one
    line and status 130; and the teardown under those threads is where crashes come from. Every
    file jaxlogit writes is complete and closed by now, so only the standard streams need flushing.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken pipe: nothing left to say
            pass
    os._exit(code)
