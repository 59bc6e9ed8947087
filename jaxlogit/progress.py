"""Progress bars for long jobs (rich), quiet when disabled or not on a terminal."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True, completed: int = 0) -> Iterator:
    """A context manager yielding ``advance(n=1, **fields)``; shows a rich bar when enabled.

    Args:
      description: what is being done (shown left of the bar).
      total: number of units of work.
      enabled: ``False`` gives a no-op ``advance`` (tests, library use).
      completed: units already done (a resumed job starts its bar here).
    """
    if not enabled:
        yield lambda n=1, **fields: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, completed=completed, info="")

        def advance(n: int = 1, **fields) -> None:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            bar.update(task, advance=n, info=info)

        yield advance
