"""Progress of long jobs: a rich bar on a terminal, a plain line every few seconds in a log
file, and a JSON-lines event log that a user can ``tail -f`` or parse.

How progress shows is a process-wide setting (:func:`configure`; the CLI's ``--log-every``
and ``--quiet``), so library functions only say *whether* to report (``progress=``) and
*where* their artifact keeps its events.

* stderr is a terminal: rich bars, as before.
* stderr is not a terminal (``cmd 2> run.log``, a batch job): a line to stderr at the start,
  every ``log_every`` seconds (``$JAXLOGIT_LOG_EVERY``, default 30) and at the end, e.g.
  ``2026-12-01T20:31:07Z logits 4000/10000 (40.0%) 61.2 img/s ETA 1m38s elapsed 1m05s devices=1``.
* ``quiet``: neither; the event logs are still written.

Events (one JSON object a line): ``{"event": "start"|"progress"|"end"|"stopped", "stage", "done",
"total", "elapsed", "rate", "time", ...fields}``, appended to the artifact's ``events.jsonl``
and to the run's events file (:func:`configure`'s ``run_events``, e.g. an experiment's
``--out`` folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import sys
import threading
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

DEFAULT_LOG_EVERY = 30.0
EVENTS_FILE = "events.jsonl"


@dataclasses.dataclass
class Settings:
    """Process-wide progress settings (see :func:`configure`).

    Attributes:
      log_every: seconds between plain lines when stderr is not a terminal; None reads
        ``$JAXLOGIT_LOG_EVERY`` (default 30).
      quiet: no bars and no lines (event logs are still written).
      run_events: a run-level events file that every stage also appends to, or None.
    """

    log_every: float | None = None
    quiet: bool = False
    run_events: pathlib.Path | None = None


SETTINGS = Settings()


def configure(
    *, log_every: float | None = None, quiet: bool | None = None, run_events: str | os.PathLike | None = None
) -> None:
    """Sets how progress is shown for the rest of the process (arguments left None are kept)."""
    if log_every is not None:
        if log_every <= 0:
            raise ValueError(f"log_every must be > 0 seconds, got {log_every}")
        SETTINGS.log_every = float(log_every)
    if quiet is not None:
        SETTINGS.quiet = bool(quiet)
    if run_events is not None:
        SETTINGS.run_events = pathlib.Path(run_events)


@contextlib.contextmanager
def run_events(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Within the block, every stage also appends its events to ``path`` (a run's ``events.jsonl``)."""
    previous = SETTINGS.run_events
    SETTINGS.run_events = pathlib.Path(path)
    try:
        yield SETTINGS.run_events
    finally:
        SETTINGS.run_events = previous


def log_every() -> float:
    """Seconds between plain progress lines: the setting, else ``$JAXLOGIT_LOG_EVERY``, else 30."""
    if SETTINGS.log_every is not None:
        return SETTINGS.log_every
    try:
        value = float(os.environ.get("JAXLOGIT_LOG_EVERY", DEFAULT_LOG_EVERY))
    except ValueError:
        return DEFAULT_LOG_EVERY
    return value if value > 0 else DEFAULT_LOG_EVERY


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: float) -> str:
    """``1h02m``, ``3m05s`` or ``42s``."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def _format_fields(fields: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def _device_count() -> int:
    import jax

    return jax.device_count()


class _Tracker:
    """Counts done units of one stage; writes its events and plain lines (thread-safe)."""

    def __init__(self, stage: str, total: int, completed: int, unit: str, files: list[pathlib.Path]):
        self.stage, self.total, self.unit, self.files = stage, total, unit, files
        self.first = self.done = completed
        self.partial = 0  # units of the current step done but not yet committed (see `partial`)
        self.start = time.perf_counter()
        self.fields: dict = {}
        self.stage_fields = dict(_STAGE_FIELDS)
        self.devices = _device_count()
        self.lock = threading.Lock()

    def advance(self, n: int, fields: dict) -> None:
        with self.lock:
            self.done += n
            self.partial = 0
            self.fields = fields

    def add_partial(self, n: int) -> None:
        with self.lock:
            self.partial += n

    def snapshot(self, event: str, *, with_partial: bool = False) -> dict:
        """The state as an event; ``with_partial`` counts uncommitted units too (plain lines do)."""
        with self.lock:
            elapsed = time.perf_counter() - self.start
            done = self.done + (self.partial if with_partial else 0)
            rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
            return {
                "event": event,
                "stage": self.stage,
                "done": done,
                "total": self.total,
                "elapsed": round(elapsed, 3),
                "rate": round(rate, 3),
                "time": _utc_now(),
                "devices": self.devices,
                **self.stage_fields,
                **self.fields,
            }

    def write_event(self, event: str) -> dict:
        record = self.snapshot(event)
        line = json.dumps(record, default=str) + "\n"
        for path in self.files:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(line)
        return record

    def line(self, record: dict) -> str:
        """One plain log line for ``record``."""
        done, total, rate = record["done"], record["total"], record["rate"]
        percent = 100.0 * done / total if total else 100.0
        eta = _duration((total - done) / rate) if rate > 0 else "?"
        extra = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
        text = (
            f"{record['time']} {self.stage} {done}/{total} ({percent:.1f}%) {rate:.3g} {self.unit}/s "
            f"ETA {eta} elapsed {_duration(record['elapsed'])} devices={record['devices']}"
        )
        suffix = {"end": " done", "stopped": " stopped"}.get(record["event"], "")
        return (f"{text} {_format_fields(extra)}" if extra else text) + suffix


# Fields every stage started now carries (:func:`stage_fields`).
_STAGE_FIELDS: dict = {}

_RECORD_KEYS = ("event", "stage", "done", "total", "elapsed", "rate", "time", "devices")

# The stages in progress in this process, innermost last (what `partial` reports to).
_ACTIVE: list[_Tracker] = []


def partial(n: int) -> None:
    """Reports ``n`` more units of the innermost stage done but not yet committed (e.g. images of
    a shard not yet written): plain lines count them, events do not. A no-op outside a stage."""
    if _ACTIVE:
        _ACTIVE[-1].add_partial(n)


def _print_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _periodic_lines(tracker: _Tracker, every: float) -> Iterator:
    """Prints a progress line now, every ``every`` seconds from a thread, and at the end."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            _print_line(tracker.line(tracker.snapshot("progress", with_partial=True)))

    _print_line(tracker.line(tracker.snapshot("start")))
    thread = threading.Thread(target=loop, name=f"progress-{tracker.stage}", daemon=True)
    thread.start()
    try:
        yield lambda n, fields: None
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _rich_bar(description: str, total: int, completed: int) -> Iterator:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, completed=completed, info="")
        yield lambda n, fields: bar.update(task, advance=n, info=_format_fields(fields))


@contextlib.contextmanager
def progress_bar(
    description: str,
    total: int,
    *,
    enabled: bool = True,
    completed: int = 0,
    unit: str = "it",
    events: str | os.PathLike | None = None,
) -> Iterator:
    """A context manager yielding ``advance(n=1, **fields)`` that reports a stage's progress.

    Shown as :data:`SETTINGS` says (module docstring): a rich bar when stderr is a terminal,
    else plain lines every ``log_every()`` seconds; nothing when ``quiet``. Each ``advance``
    also appends a ``progress`` event to ``events`` and to the run's events file.

    Args:
      description: the stage (shown left of the bar, ``stage`` of the events).
      total: number of units of work.
      enabled: ``False`` gives a no-op ``advance`` and writes no events (tests, library use).
      completed: units already done (a resumed job starts its bar here).
      unit: what a unit is, for the rate (``img`` gives ``img/s``).
      events: the artifact's ``events.jsonl``, or None for the run's file only.
    """
    if not enabled:
        yield lambda n=1, **fields: None
        return
    files = [pathlib.Path(p) for p in (events, SETTINGS.run_events) if p is not None]
    tracker = _Tracker(description, total, completed, unit, files)
    tracker.write_event("start")
    _ACTIVE.append(tracker)
    if SETTINGS.quiet:
        display = contextlib.nullcontext(lambda n, fields: None)
    elif sys.stderr.isatty():
        display = _rich_bar(description, total, completed)
    else:
        display = _periodic_lines(tracker, log_every())
    try:
        with display as show:

            def advance(n: int = 1, **fields) -> None:
                tracker.advance(n, fields)
                tracker.write_event("progress")
                show(n, fields)

            yield advance
    except BaseException:
        tracker.write_event("stopped")
        raise
    finally:
        _ACTIVE.remove(tracker)
    record = tracker.write_event("end")
    if not SETTINGS.quiet and not sys.stderr.isatty():
        _print_line(tracker.line(record))


@contextlib.contextmanager
def stage_fields(**fields) -> Iterator[None]:
    """Within the block, every stage that starts carries ``fields`` (e.g. ``attack_batch=250``)
    in its events and plain lines, beside those its ``advance`` reports."""
    previous = dict(_STAGE_FIELDS)
    _STAGE_FIELDS.update(fields)
    try:
        yield
    finally:
        _STAGE_FIELDS.clear()
        _STAGE_FIELDS.update(previous)
