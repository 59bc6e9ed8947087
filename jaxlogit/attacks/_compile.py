"""Splitting a ``logits_fn`` into a hashable static part and traced weight arrays.

Every attack is one ``jax.jit`` program with ``logits_fn`` as a static argument. A plain
function is static as it is: jit's cache is keyed on the function object, so passing the same
function again reuses the compiled program, but any arrays it closes over are baked into the
program as constants and a *new* closure compiles again.

The pattern we recommend (and that ``jaxlogit.models.logits_fn`` is meant to return) is a
``functools.partial`` (or ``jax.tree_util.Partial``) that binds the weights as arguments::

    logits_fn = functools.partial(apply_fn, variables)

Such a partial is split into its function plus the tree structure and non-array leaves of its
bound arguments (static, hashable) and its array leaves (traced). Two partials of the same
function whose bound arrays have the same shapes and dtypes therefore share one compiled
program, and the weights are ordinary program inputs, not constants.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Hashable

import jax
import numpy as np


@dataclasses.dataclass(frozen=True)
class _ByIdentity:
    """Makes an unhashable static leaf hashable by its identity (recompiles per object)."""

    value: Any

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray))


def _hashable(leaf: Any) -> Hashable:
    try:
        hash(leaf)
    except TypeError:
        return _ByIdentity(leaf)
    return leaf


def _unwrap(leaf: Any) -> Any:
    return leaf.value if isinstance(leaf, _ByIdentity) else leaf


@dataclasses.dataclass(frozen=True)
class StaticFn:
    """The hashable part of a ``logits_fn``, used as a static argument of the attack programs.

    Attributes:
      func: the function itself (for a partial: the wrapped function).
      treedef: tree structure of the partial's bound ``(args, keywords)``.
      static_leaves: the non-array leaves in tree order, ``None`` where an array goes.
      is_array: per leaf, whether it is supplied as a traced array.
    """

    func: Callable
    treedef: Any
    static_leaves: tuple
    is_array: tuple

    def bind(self, arrays: tuple) -> Callable:
        """Rebuilds the callable from the traced ``arrays`` (as returned by ``split_logits_fn``)."""
        if self.treedef is None:
            return self.func
        remaining = iter(arrays)
        leaves = [
            next(remaining) if is_array else _unwrap(leaf)
            for leaf, is_array in zip(self.static_leaves, self.is_array)
        ]
        args, keywords = jax.tree_util.tree_unflatten(self.treedef, leaves)
        return functools.partial(self.func, *args, **keywords)


def split_logits_fn(logits_fn: Callable) -> tuple[StaticFn, tuple]:
    """Splits ``logits_fn`` into ``(static, arrays)`` with ``static.bind(arrays)`` equivalent.

    Args:
      logits_fn: any callable; a ``functools.partial`` / ``jax.tree_util.Partial`` has its
        bound array arguments (any pytree of them, e.g. flax ``variables``) moved to ``arrays``.

    Returns:
      ``static``: a hashable ``StaticFn``; ``arrays``: tuple of the bound arrays (empty for a
      plain function).
    """
    if not isinstance(logits_fn, functools.partial):
        return StaticFn(logits_fn, None, (), ()), ()
    leaves, treedef = jax.tree_util.tree_flatten((logits_fn.args, dict(logits_fn.keywords)))
    is_array = tuple(_is_array(leaf) for leaf in leaves)
    static_leaves = tuple(None if a else _hashable(leaf) for leaf, a in zip(leaves, is_array))
    arrays = tuple(leaf for leaf, a in zip(leaves, is_array) if a)
    return StaticFn(logits_fn.func, treedef, static_leaves, is_array), arrays
