"""Where the benchmarks write their reports, and how (atomically, announced on stdout)."""

from __future__ import annotations

import pathlib
import subprocess

from jaxlogit import paths

RESULTS = pathlib.Path(__file__).parent / "results"


def write_report(lines: list[str], out: pathlib.Path) -> str:
    """Writes ``lines`` as one markdown file ``out`` (atomically) and returns the text."""
    text = "\n".join(lines)
    paths.write_text_atomic(out, text + "\n")
    print(f"wrote {out}")
    return text


def commit() -> str:
    """The checkout's commit (short hash, ``+dirty`` with uncommitted changes), or ``unknown``."""
    root = pathlib.Path(__file__).parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.stdout.strip() else "")
