"""Where the benchmarks write their reports, and how (atomically, announced on stdout)."""

from __future__ import annotations

import pathlib

from jaxlogit import paths

RESULTS = pathlib.Path(__file__).parent / "results"


def write_report(lines: list[str], out: pathlib.Path) -> str:
    """Writes ``lines`` as one markdown file ``out`` (atomically) and returns the text."""
    text = "\n".join(lines)
    paths.write_text_atomic(out, text + "\n")
    print(f"wrote {out}")
    return text
