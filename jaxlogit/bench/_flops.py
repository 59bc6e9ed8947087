"""FLOP counts from XLA's cost analysis and the machine's measured matmul peak."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlogit.bench import _timing


def compiled_flops(fn: Callable, *args) -> float:
    """FLOPs XLA counts for one call of ``jax.jit(fn)(*args)`` (its cost analysis)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"])


def matmul_peak_gflops(size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of the best of ``repeats`` float32 ``(size, size) @ (size, size)`` products.

    ``2 * size**3`` FLOPs per product: the practical peak of this machine for dense float32
    work, measured in the same run as the benchmarks it is compared with.
    """
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32)
    product = jax.jit(jnp.dot)
    timings, _ = _timing.interleaved({"matmul": lambda: product(a, b)}, repeats)
    return 2.0 * size**3 / timings["matmul"].best / 1e9
