"""Batches of a split's images in order, decoded ahead of the device: ``iter_batches``, ``BatchReader``.

An in-memory split (``ArraySplit``) is sliced batch by batch in the calling thread: there is nothing
to overlap, and a worker would only cost. Any other split (ImageNet JPEGs in folders, a TFDS
ArrayRecord) is read through grain, one image per element: ``workers`` processes decode and
resize the images (``grain.MapDataset.mp_prefetch``; 0: threads of this process) while the
device computes, and a thread of this process stacks them into batches. About three batches of
pixels are in flight at most: the workers' buffers (half a batch in all, three times over),
the batch being stacked and one stacked batch waiting.

The batches hold exactly the pixels and labels of ``split.get_batch`` on the same rows, in order,
whatever the number of workers.
"""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Iterator, Sequence

import numpy as np

from jaxlogit.data._split import ArraySplit, Split
from jaxlogit.errors import JaxlogitError

MAX_DEFAULT_WORKERS = 16
"""The default number of worker processes never exceeds this (``--data-workers`` may)."""
_THREADS_IN_PROCESS = 8  # decoding threads when workers == 0 (PIL releases the GIL)
_STACKED_AHEAD = 1  # stacked batches waiting for the consumer


WORKERS_ENV = "JAXLOGIT_DATA_WORKERS"
"""Environment variable that sets ``default_workers()`` (the test suite sets it to 0)."""


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Worker processes used when none are asked for: ``$JAXLOGIT_DATA_WORKERS`` if set, else the
    usable CPU cores but one (left to the process that feeds the device), at least 1 and at most
    ``MAX_DEFAULT_WORKERS``.

    Raises:
      JaxlogitError: ``$JAXLOGIT_DATA_WORKERS`` is not an integer >= 0.
    """
    value = os.environ.get(WORKERS_ENV, "").strip()
    if not value:
        return max(1, min(MAX_DEFAULT_WORKERS, _usable_cores() - 1))
    if not value.isdigit():
        raise JaxlogitError(
            f"{WORKERS_ENV}={value!r}: set it to 0 (decode in this process) or a number of worker "
            "processes >= 1, or unset it"
        )
    return int(value)


def check_workers(workers: int | None) -> int:
    """The number of decoding worker processes: ``workers``, or ``default_workers()`` if None.

    Raises:
      JaxlogitError: ``workers`` is not an integer >= 0.
    """
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise JaxlogitError(
            f"--data-workers={workers!r}: pass 0 (decode in this process) or a number of worker "
            "processes >= 1"
        )
    return int(workers)


class Batches(Iterator):
    """An iterator of ``(x, y)`` batches that stops its workers when closed.

    Use it in a ``with`` block, or exhaust it: either way no worker outlives it.
    """

    def __init__(self, batches: Iterator, close=None):
        self._batches = batches
        self._close = close

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        try:
            return next(self._batches)
        except StopIteration:
            pass
        self.close()  # outside the handler, whose exception would keep the last images alive
        raise StopIteration

    def close(self) -> None:
        """Stops the workers (if any) and drops the batches decoded ahead; idempotent."""
        close, self._close = self._close, None
        self._batches = iter(())  # drop the pipeline now: grain's iterators close again when collected
        if close is not None:
            close()

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Rows:
    """grain's random-access source: element ``i`` is image ``indices[i]`` of ``split``,
    ``(x float32 (H, W, C), y int32)``, read with ``split.get_batch`` (so with its pixels)."""

    def __init__(self, split: Split, indices: np.ndarray):
        self._split = split
        self._indices = indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        x, y = self._split.get_batch(self._indices[i : i + 1])
        return x[0], y[0]


def _stack(rows: Sequence[tuple[np.ndarray, np.int32]]) -> tuple[np.ndarray, np.ndarray]:
    """One batch ``(x (B, H, W, C), y (B,))`` in new plain arrays: never a view of the shared memory a
    worker handed an image over in (grain's own stacking returns one for a batch of one image)."""
    x = np.empty((len(rows), *rows[0][0].shape), np.float32)
    for i, (image, _) in enumerate(rows):
        x[i] = image
    return x, np.array([label for _, label in rows], np.int32)


def _mark_absl_flags_parsed() -> None:
    """grain reads an absl flag when it starts workers; outside an absl app nothing parsed the
    flags, so their defaults are taken as they are (as ``absl.app.run`` without arguments would)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _grain_batches(split: Split, indices: np.ndarray, batch_size: int, workers: int) -> Batches:
    """The grain pipeline of the module docstring."""
    import grain

    _mark_absl_flags_parsed()
    dataset = grain.MapDataset.source(_Rows(split, indices))
    if workers == 0:
        ahead = max(batch_size, _THREADS_IN_PROCESS)
        read = grain.ReadOptions(num_threads=_THREADS_IN_PROCESS, prefetch_buffer_size=ahead)
        dataset = dataset.to_iter_dataset(read)
    else:
        ahead = -(-batch_size // (2 * workers))  # images each worker decodes ahead
        dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=ahead))
        dataset = dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=ahead)
        )
    dataset = grain.experimental.ThreadPrefetchIterDataset(
        dataset.batch(batch_size, batch_fn=_stack), prefetch_buffer_size=_STACKED_AHEAD
    )
    iterator = iter(dataset)
    return Batches(iterator, functools.partial(_close_pipeline, [iterator]))


def _close_pipeline(holder: list) -> None:
    """Stops grain's workers and threads, then frees the images they handed over in shared memory
    (one left at exit is reported leaked by ``multiprocessing.resource_tracker``): the last ones
    stay in a reference cycle (an exception's frames) that only a collection frees, and grain
    unlinks them on a thread of its own, which is waited for."""
    holder.pop().close()
    gc.collect()
    try:
        from grain._src.python.ipc.shared_memory_array import SharedMemoryArray
    except ImportError:  # another grain: nothing known to wait for
        return
    unlinking = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if unlinking is not None:
        unlinking.apply(int)  # its one thread runs requests in order: the unlinks queued before are done


def iter_batches(
    split: Split, indices: Sequence[int] | np.ndarray, batch_size: int, *, workers: int | None = None
) -> Batches:
    """The images and labels at ``indices``, ``batch_size`` rows at a time, in order, decoded ahead.

    Args:
      split: any ``Split``; an ``ArraySplit`` is sliced in this thread, others go through grain.
        With workers, the split is pickled into each worker process.
      indices: int rows of ``split``, ``(N,)``, in the order wanted (repeats allowed).
      batch_size: rows per batch; the last batch may be smaller.
      workers: decoding processes (0: threads of this process; None: ``default_workers()``).
        Ignored by an ``ArraySplit``.

    Returns:
      ``Batches``: an iterator of ``(x, y)``, float32 ``(B, H, W, C)`` in [0, 1] and int32 ``(B,)``,
      equal to ``split.get_batch(indices[i : i + batch_size])`` for i = 0, batch_size, ...;
      a context manager whose exit stops the workers.

    Raises:
      JaxlogitError: ``batch_size`` < 1 or a bad ``workers``.
    """
    workers = check_workers(workers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise JaxlogitError(f"batch_size={batch_size!r}: pass an integer >= 1")
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if isinstance(split, ArraySplit) or len(indices) == 0:
        starts = range(0, len(indices), batch_size)
        return Batches(split.get_batch(indices[i : i + batch_size]) for i in starts)
    return _grain_batches(split, indices, int(batch_size), workers)


class BatchReader:
    """Consecutive row ranges of ``indices`` read as one stream: the workers start once, not per range.

    ``read(start, stop)`` gives the batches of rows ``[start, stop)``; when ``start`` is where the
    previous range stopped, the stream goes on (decoded ahead across the boundary), otherwise it
    restarts at ``start``. A logit store's shards are such ranges (``pipeline.ensure_logits``).

    Args:
      split, batch_size, workers: as ``iter_batches``.
      indices: the rows of ``split`` the ranges index, ``(N,)``.
    """

    def __init__(
        self,
        split: Split,
        indices: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        workers: int | None = None,
    ):
        self._split = split
        self._indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        self._batch_size = batch_size
        self._workers = check_workers(workers)
        self._stream: Batches | None = None
        self._position = 0

    def read(self, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches ``(x, y)`` of rows ``[start, stop)``: ``batch_size`` rows each, the last maybe fewer."""
        stop = min(stop, len(self._indices))
        aligned = (stop - start) % self._batch_size == 0 or stop == len(self._indices)
        if not aligned:  # a batch of the stream would cross ``stop``: read this range on its own
            self.close()
            rows = self._indices[start:stop]
            with iter_batches(self._split, rows, self._batch_size, workers=self._workers) as once:
                yield from once
            return
        if self._stream is None or self._position != start:
            self.close()
            rows = self._indices[start:]
            self._stream = iter_batches(self._split, rows, self._batch_size, workers=self._workers)
            self._position = start
        while self._position < stop:
            x, y = next(self._stream)
            self._position += len(y)
            yield x, y

    def close(self) -> None:
        """Stops the stream's workers; a later ``read`` starts a new stream."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
