"""Batch sizes that fit the device: a program's memory from XLA, the largest batch that fits.

A compiled program's peak is ``fixed + per_image x B``: XLA's memory analysis of the program
compiled (not run) for two small probe batches gives the line (:func:`probe_fit`), and
:func:`largest_fitting` picks the largest batch, ``cap`` or a power of two below it, whose
predicted peak fits ``MEMORY_SHARE`` of the free memory (:func:`free_memory_bytes`).

Compiling the probes costs seconds to minutes, so :func:`choose` first tries a cheap bound that
compiles nothing (:func:`jaxpr_bound_bytes`: every value the traced program names, alive at once,
twice over); where it fits at ``cap``, so does the program. A batch the caller gives explicitly is
checked the same way, and one that cannot fit is a one-line ``JaxlogitError`` naming one that can.

``$JAXLOGIT_FREE_MEMORY_BYTES`` overrides the free memory (tests; a user sharing a device).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from jaxlogit.errors import JaxlogitError

AUTO = "auto"
"""``--attack-batch auto``: the largest batch up to the cap that fits the device."""
FREE_MEMORY_ENV = "JAXLOGIT_FREE_MEMORY_BYTES"
MEMORY_SHARE = 0.6
"""Share of the free memory a batch may use: the rest absorbs the allocator's fragmentation,
the host's other arrays (data batches, outputs) and other processes."""
PROBE_BATCHES = (2, 4)
BOUND_MARGIN = 2.0
"""The cheap bound counts every jaxpr value once; XLA adds copies (loop carries, layouts): x2."""
MEMINFO = "/proc/meminfo"
GB = 1e9


class MemoryFit(NamedTuple):
    """A program's peak bytes as a line in its batch size ``B``: ``fixed + per_image * B``."""

    fixed_bytes: float
    per_image_bytes: float

    def bytes_for(self, batch: int) -> float:
        """Predicted peak bytes of one call on ``batch`` images."""
        return self.fixed_bytes + self.per_image_bytes * batch


def fit_line(points: dict[int, float]) -> MemoryFit:
    """The line through two ``{batch: bytes}`` points (per-image bytes clipped at >= 0)."""
    (b1, m1), (b2, m2) = sorted(points.items())[:2]
    per_image = max((m2 - m1) / (b2 - b1), 0.0)
    return MemoryFit(fixed_bytes=max(m1 - per_image * b1, 0.0), per_image_bytes=per_image)


def compiled_bytes(compiled) -> int:
    """Device bytes one call of an XLA-compiled program needs: temporaries, arguments and
    outputs (less what outputs alias), from ``compiled.memory_analysis()``."""
    m = compiled.memory_analysis()
    return int(
        m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    )


def probe_fit(compile_for: Callable[[int], object], batches: tuple[int, ...] = PROBE_BATCHES) -> MemoryFit:
    """The memory line of a program from XLA's analysis of it compiled for two probe batches.

    Args:
      compile_for: ``batch -> compiled program`` (e.g. ``jitted.lower(specs).compile()``).
      batches: the two probe batch sizes.
    """
    return fit_line({b: compiled_bytes(compile_for(b)) for b in batches})


def _aval_bytes(var) -> int:
    aval = var.aval
    shape = getattr(aval, "shape", None)
    dtype = getattr(aval, "dtype", None)
    if shape is None or dtype is None or not hasattr(dtype, "itemsize"):
        return 0  # tokens, keys' abstract types without a byte size
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _sub_jaxprs(params: dict) -> list:
    """The jaxprs (open or closed) in an equation's parameters (pjit, loops, conds, custom rules)."""
    found = []
    for value in params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, (jax.extend.core.Jaxpr, jax.extend.core.ClosedJaxpr)):
                found.append(item)
    return found


def _constants(closed) -> list:
    """The arrays a closed jaxpr and its sub-jaxprs hold as constants (each once)."""
    found = {id(c): c for c in getattr(closed, "consts", ()) if hasattr(c, "shape")}
    for eqn in getattr(closed, "jaxpr", closed).eqns:
        for sub in _sub_jaxprs(eqn.params):
            found.update({id(c): c for c in _constants(sub)})
    return list(found.values())


def jaxpr_value_bytes(jaxpr) -> int:
    """Bytes of every value ``jaxpr`` names (inputs, each equation's outputs and those of its
    sub-jaxprs: loop bodies once), as if all were alive at once; constants not included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)  # a ClosedJaxpr's own
    total = sum(_aval_bytes(v) for v in jaxpr.invars)
    for eqn in jaxpr.eqns:
        total += sum(_aval_bytes(v) for v in eqn.outvars)
        for sub in _sub_jaxprs(eqn.params):
            inner = getattr(sub, "jaxpr", sub)
            total += jaxpr_value_bytes(inner) - sum(_aval_bytes(v) for v in inner.invars)  # outer values
    return total


def constant_bytes(closed) -> int:
    """Bytes of the arrays a closed jaxpr (and its sub-jaxprs) holds as constants, e.g. weights a
    function closes over: XLA's memory analysis leaves them out."""
    return sum(int(np.prod(c.shape, dtype=np.int64)) * c.dtype.itemsize for c in _constants(closed))


def jaxpr_bound_bytes(closed) -> int:
    """A cheap bound on the peak bytes of a program from its traced jaxpr (never compiled).

    ``BOUND_MARGIN`` x :func:`jaxpr_value_bytes`, plus the bytes of the arrays it holds as
    constants (weights a function closes over: a second copy). Not a proof (XLA may add buffers
    a jaxpr does not name), which the margin covers; ``benchmarks/attack_memory.py`` and the
    tests compare it with XLA's analysis.

    Args:
      closed: a ``ClosedJaxpr``, e.g. ``jax.make_jaxpr(fn)(*specs)`` or ``jitted.trace(*specs).jaxpr``.
    """
    return int(BOUND_MARGIN * jaxpr_value_bytes(closed)) + constant_bytes(closed)


def _meminfo_available() -> int | None:
    try:
        with open(MEMINFO) as meminfo:
            match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read(), re.MULTILINE)
    except OSError:
        return None
    return None if match is None else int(match.group(1)) * 1024


def free_memory_bytes(device: jax.Device | None = None) -> int | None:
    """Memory a new program can use on ``device`` (default: the first), in bytes.

    ``$JAXLOGIT_FREE_MEMORY_BYTES`` if set; an accelerator's ``bytes_limit - bytes_in_use``;
    on the CPU the host's ``MemAvailable`` (``/proc/meminfo``); None where unknown.
    """
    override = os.environ.get(FREE_MEMORY_ENV)
    if override:
        try:
            return int(float(override))
        except ValueError:
            message = f"${FREE_MEMORY_ENV}={override!r}: pass a number of bytes, e.g. 8e9"
            raise JaxlogitError(message) from None
    device = device or jax.devices()[0]
    if device.platform == "cpu":
        return _meminfo_available()
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))


def candidates(cap: int) -> list[int]:
    """Batch sizes tried, largest first: ``cap``, then the powers of two below it."""
    powers = [1 << k for k in range(cap.bit_length()) if (1 << k) < cap]
    return [cap, *reversed(powers)]


def largest_fitting(fit: MemoryFit, budget_bytes: float, cap: int) -> int | None:
    """The largest of :func:`candidates` whose predicted peak fits ``budget_bytes``; None if
    not even one image fits."""
    return next((b for b in candidates(cap) if fit.bytes_for(b) <= budget_bytes), None)


class Request(NamedTuple):
    """What :func:`choose` sizes: a program on images of one shape, described for messages.

    Attributes:
      option: the command-line option that sets the batch, e.g. ``--attack-batch``.
      what: the program in words, e.g. ``resnet50 pgd at 224x224``.
      bound: ``batch -> bytes``, a cheap upper bound on the peak (or None: none known).
      fit: ``() -> MemoryFit``, XLA's line (compiles probes; called only when needed).
    """

    option: str
    what: str
    bound: Callable[[int], float] | None
    fit: Callable[[], MemoryFit]


def choose(request: Request, requested: int | str, cap: int, free_bytes: int | None) -> int:
    """The batch size to run: ``requested`` if an int that fits, else the largest that fits.

    Args:
      request: the program (:class:`Request`).
      requested: ``AUTO`` or an explicit batch size >= 1.
      cap: the largest batch ``AUTO`` picks.
      free_bytes: free memory (:func:`free_memory_bytes`); None: unknown, nothing is checked.

    Raises:
      JaxlogitError: an explicit batch that does not fit, naming one that does; or not even
        one image fits.
    """
    target = cap if requested == AUTO else int(requested)
    if free_bytes is None:
        return target
    budget = MEMORY_SHARE * free_bytes
    if request.bound is not None and request.bound(target) <= budget:
        return target
    fit = request.fit()
    if fit.bytes_for(target) <= budget:
        return target
    fitting = largest_fitting(fit, budget, target)
    if fitting is None:
        raise JaxlogitError(
            f"{request.what} needs ~{fit.bytes_for(1) / GB:.2g} GB for one image; this host has "
            f"~{free_bytes / GB:.2g} GB free ({MEMORY_SHARE:.0%} usable): free memory or use a smaller input"
        )
    if requested == AUTO:
        return fitting
    raise JaxlogitError(
        f"{request.option} {target} needs ~{fit.bytes_for(target) / GB:.2g} GB for {request.what}; "
        f"this host has ~{free_bytes / GB:.2g} GB free ({MEMORY_SHARE:.0%} usable): "
        f"pass {request.option} {fitting} or less"
    )
