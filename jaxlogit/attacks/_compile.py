"""Splitting a ``logits_fn`` into a hashable static part and traced weight arrays.

Every attack is one ``jax.jit`` program with the static part of ``logits_fn`` as a static
argument and its weights as traced inputs; the one convention for this lives in
``jaxlogit._weights`` (see its docstring and docs/ARCHITECTURE.md, "Functions that hold
weights"). Bind the weights with ``functools.partial`` / ``jax.tree_util.Partial``::

    logits_fn = functools.partial(apply_fn, variables)

and two such functions whose weights have the same shapes and dtypes share one compiled program.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxlogit._weights import StaticFn, split_fn

__all__ = ["StaticFn", "split_logits_fn"]


def split_logits_fn(logits_fn: Callable) -> tuple[StaticFn, tuple]:
    """``jaxlogit._weights.split_fn`` for an attack's ``logits_fn`` (or objective)."""
    return split_fn(logits_fn, "logits_fn")
