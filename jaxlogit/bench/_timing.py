"""Wall-clock timing: the first call (compilation included) apart from the steady state."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax


class Timing(NamedTuple):
    """Seconds of one measured function.

    Attributes:
      first: the first call, which includes tracing and compilation for JAX.
      best: the fastest of the later calls (the steady state).
      calls: every later call's seconds, in order (their spread shows the machine's noise).
    """

    first: float
    best: float
    calls: tuple[float, ...]

    @property
    def compile(self) -> float:
        """Compilation (and tracing) time estimated as ``first - best`` (never negative)."""
        return max(self.first - self.best, 0.0)


def timed_call(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Runs ``fn()`` once and waits for its (JAX) result: ``(seconds, result)``."""
    start = time.perf_counter()
    result = jax.block_until_ready(fn())
    return time.perf_counter() - start, result


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, Timing], dict]:
    """Times several functions: one first call each, then ``repeats`` interleaved rounds.

    Interleaving (one call of every function per round) spreads the load of other processes on
    a shared machine over all of them alike, so ratios measured in one run stay meaningful.

    Args:
      fns: name -> a function of no arguments (a JAX result is waited for).
      repeats: number of steady-state rounds (>= 1).

    Returns:
      ``(timings, results)``: name -> :class:`Timing`, and name -> the last call's result.
    """
    firsts, results = {}, {}
    for name, fn in fns.items():
        firsts[name], results[name] = timed_call(fn)
    calls: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds, results[name] = timed_call(fn)
            calls[name].append(seconds)
    return {name: Timing(firsts[name], min(calls[name]), tuple(calls[name])) for name in fns}, results
