"""``jax.jit`` with the XLA options jaxlogit compiles its convolution-heavy programs with.

On CPU, XLA (jaxlib 0.10) hands convolutions to YNNPACK by default. For the networks here
Eigen's convolutions are faster, in attacks (forward + input gradient) and in training
(``python -m benchmarks.bench_conv_grad`` times PGD steps both ways in one run and writes
``benchmarks/results/conv_grad.md``). ``CONV_OPTIONS`` keeps YNNPACK for matrix products
only. It is an XLA:CPU choice: on other backends (``jaxlogit.backend.on_cpu``) :func:`jit`
compiles with XLA's defaults. Set ``JAXLOGIT_XLA_OPTIONS=0`` to compile with XLA's defaults on
CPU too.

JAX refuses compiler options on a jit nested in another one (the outer program is compiled as
one), so :func:`jit` compiles with them only when called outside any trace. A jaxlib that does
not know the option (older or newer than 0.10) rejects it at compile time: :func:`jit` then
warns once and compiles with XLA's defaults from there on.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import jax

from jaxlogit import backend

CONV_OPTIONS: dict[str, str] = (
    {}
    if os.environ.get("JAXLOGIT_XLA_OPTIONS") == "0"
    else {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
)

# Set once a compilation rejected CONV_OPTIONS: every later call uses the plain jit.
_rejected: list[str] = []


def _traced(args: tuple, kwargs: dict) -> bool:
    """Whether any argument is a tracer, i.e. the call is inside another jit (or grad, vmap)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))


def jit(fun: Callable | None = None, /, **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)`` compiled with ``CONV_OPTIONS`` on CPU; also a decorator factory.

    ``@jit``, ``@jit(static_argnames=...)`` and ``jit(f, ...)`` all work like ``jax.jit``.
    Called inside another trace it runs as a plain ``jax.jit(fun, **kwargs)``, which becomes
    part of the outer program: wrap the outermost jit of a program with this one.
    ``.lower`` and ``._cache_size`` are those of the version with the options; ``.trace`` is the
    one a call would use (its trace is then reused by the call).
    """
    if fun is None:
        return lambda f: jit(f, **kwargs)
    plain = jax.jit(fun, **kwargs)
    if not CONV_OPTIONS:
        return plain
    tuned = jax.jit(fun, compiler_options=CONV_OPTIONS, **kwargs)

    @functools.wraps(fun)
    def dispatch(*args: Any, **call_kwargs: Any) -> Any:
        if _rejected or _traced(args, call_kwargs) or not backend.on_cpu():
            return plain(*args, **call_kwargs)
        try:
            return tuned(*args, **call_kwargs)
        except jax.errors.JaxRuntimeError as error:
            if not any(name in str(error) for name in CONV_OPTIONS):
                raise
            _rejected.append(str(error).splitlines()[0])
            warnings.warn(
                f"this jaxlib rejects jaxlogit's XLA options, compiling with XLA's "
                f"defaults instead ({_rejected[0]})",
                RuntimeWarning,
                stacklevel=2,
            )
            return plain(*args, **call_kwargs)

    dispatch.lower = tuned.lower
    dispatch.trace = lambda *a, **k: (plain if _rejected or not backend.on_cpu() else tuned).trace(*a, **k)
    dispatch._cache_size = tuned._cache_size
    return dispatch


def enable_compilation_cache(cache_root: str | os.PathLike) -> str | None:
    """Turns on JAX's persistent compilation cache in ``<cache_root>/xla`` (once per process).

    A later process that compiles the same program (same shapes, options and jaxlib) loads it
    from disk instead of compiling again. Called when the CLI or an experiment starts, never
    on import. Kept off when ``$JAXLOGIT_XLA_CACHE=0``; a cache directory already set (e.g.
    ``$JAX_COMPILATION_CACHE_DIR``) is kept.

    Returns:
      The cache directory in use, or None when the cache is off.
    """
    if os.environ.get("JAXLOGIT_XLA_CACHE") == "0":
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    directory = os.path.join(os.fspath(cache_root), "xla")
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory
