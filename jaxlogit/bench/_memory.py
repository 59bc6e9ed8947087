"""Peak memory of one call, measured the same way for jaxlogit and torch: resident-set growth.

On the CPU both libraries take their buffers from the C allocator, so the peak resident set
size (RSS) of the process during a call, above where it stood just before, is what the call
needed on top of what already existed (weights, inputs, compiled programs): its temporaries and
its outputs. The kernel keeps the peak itself (``VmHWM`` in ``/proc/self/status``); writing
``5`` to ``/proc/self/clear_refs`` resets it to the current RSS (Linux >= 4.0), so nothing is
sampled and no short-lived peak is missed.

Memory an earlier call freed but glibc kept mapped would be reused without growing the RSS and
go uncounted. So :func:`peaks` measures inside :func:`fresh_blocks`, where glibc maps every
block above ``FRESH_BLOCK_BYTES`` on its own, unmaps it when freed and gives back the free top
of its heaps, and each measurement starts with ``malloc_trim(0)``. That setting is global and
cannot be fully undone (glibc's own raising of the thresholds stays off), which slows torch's
per-operation allocations for the rest of the process: the bench measures memory after all
the timings of a process (``bench.run_many``).
Where the peak cannot be reset (not Linux) or the default JAX device is not the CPU (its
buffers do not live in the RSS), the measurement is ``None``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import jax

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"
RESET_PEAK = "5"  # clear_refs: reset VmHWM to the current RSS
MIB = 2**20
FRESH_BLOCK_BYTES = 64 * 1024
# glibc's mallopt parameters (malloc.h) and their documented defaults.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_DEFAULT_THRESHOLD_BYTES = 128 * 1024


def _status_kib(field: str) -> int | None:
    try:
        with open(STATUS) as status:
            match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    except OSError:
        return None
    return None if match is None else int(match.group(1))


def resident_bytes() -> int | None:
    """The process's resident set size in bytes (None where ``/proc`` is missing)."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_resident_bytes() -> int | None:
    """The highest RSS since the process started or since :func:`reset_peak` (bytes)."""
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024


def reset_peak() -> bool:
    """Resets the kernel's RSS peak to the current RSS; False where it cannot be reset."""
    try:
        with open(CLEAR_REFS, "w") as clear_refs:
            clear_refs.write(RESET_PEAK)
    except OSError:
        return False
    return True


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (has ``malloc_trim`` and ``mallopt``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and libc.malloc_trim and libc.mallopt else None
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Returns the C heap's free pages to the kernel (glibc; a no-op elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _set_thresholds(num_bytes: int) -> None:
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, num_bytes)
        libc.mallopt(M_TRIM_THRESHOLD, num_bytes)


@contextlib.contextmanager
def fresh_blocks() -> Iterator[None]:
    """Inside, glibc maps each block above ``FRESH_BLOCK_BYTES`` on its own (unmapped when
    freed) and trims its heaps' free tops, so freed memory is never reused unseen. On exit it
    goes back to glibc's default thresholds (128 KiB; glibc's own raising of them as large
    blocks are freed stays off for the process). A no-op without glibc."""
    _set_thresholds(FRESH_BLOCK_BYTES)
    try:
        yield
    finally:
        _set_thresholds(GLIBC_DEFAULT_THRESHOLD_BYTES)


@functools.cache
def measurable() -> bool:
    """Whether :func:`peak_growth` can measure here: JAX on the CPU and a resettable peak."""
    return jax.default_backend() == "cpu" and resident_bytes() is not None and reset_peak()


def peak_growth(fn: Callable[[], Any]) -> tuple[int | None, Any]:
    """Runs ``fn()`` once (waiting for a JAX result) and measures its peak memory.

    Returns:
      ``(bytes, result)``: the process's peak RSS during the call minus its RSS just before
      (None where not :func:`measurable`), and ``fn``'s result.
    """
    if not measurable():
        return None, jax.block_until_ready(fn())
    release_free_memory()
    before = resident_bytes()
    reset_peak()
    result = jax.block_until_ready(fn())
    return max(peak_resident_bytes() - before, 0), result


def peaks(fns: dict[str, Callable[[], Any]]) -> dict[str, int | None]:
    """``{name: peak_growth(fn)[0]}``, one call of each, in order, inside
    :func:`fresh_blocks` (so not while anything is being timed)."""
    with fresh_blocks():
        return {name: peak_growth(fn)[0] for name, fn in fns.items()}
