"""Functions that hold weights: one split into a hashable static part and traced arrays.

Every compiled program in jaxlogit that takes a user's function (an attack's ``logits_fn``,
an adaptive objective, explain's ``g_fn``) splits it with :func:`split_fn`, passes the static
part as a static argument of ``jax.jit`` and the arrays as ordinary arguments, and rebuilds
the function inside the program with ``static.bind(arrays)``::

    static, arrays = split_fn(logits_fn)
    program(arrays, x, fn_static=static)      # inside: logits_fn = fn_static.bind(arrays)

What is traced depends only on how the function holds its weights:

* ``jax.tree_util.Partial(apply, variables)`` or ``functools.partial(apply, variables)``
  (the recommended form; ``models.logits_fn`` and ``corrector.eval_fn`` return one): the
  array leaves of the bound arguments are traced, everything else (``apply``, the tree
  structure, non-array settings) is static. Partials nested in the bound arguments (e.g.
  ``adaptive.compose(f, g)``) or in another pytree callable are split the same way. Two
  such functions whose weights have the same shapes and dtypes share one compiled program.
* any other pytree callable (e.g. an equinox-style module): its array leaves are traced.
* a plain function or closure: static as it is (jit's cache is keyed on the function
  object); arrays it closes over are constants of the program, and a new closure compiles
  again.

A static part must be hashable: a non-array leaf that cannot be hashed is a
``JaxlogitError``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit.errors import JaxlogitError


def _is_partial(node: Any) -> bool:
    return isinstance(node, functools.partial)


def _as_pytree(tree: Any) -> Any:
    """``tree`` with every ``functools.partial`` in it (itself included) as a pytree ``Partial``."""

    def convert(node: Any) -> Any:
        if not _is_partial(node):
            return node
        return jax.tree_util.Partial(node.func, *_as_pytree(node.args), **_as_pytree(dict(node.keywords)))

    return jax.tree_util.tree_map(convert, tree, is_leaf=_is_partial)


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray))


@dataclasses.dataclass(frozen=True)
class StaticFn:
    """The hashable part of a function that holds weights (a static argument of ``jax.jit``).

    Attributes:
      treedef: tree structure of the function (a ``Partial``'s wrapped function is part of it).
      static_leaves: the non-array leaves in tree order, ``None`` where an array goes.
      is_array: per leaf, whether it is supplied as a traced array.
    """

    treedef: Any
    static_leaves: tuple
    is_array: tuple

    def bind(self, arrays) -> Callable:
        """Rebuilds the function from ``arrays`` (the second result of :func:`split_fn`)."""
        remaining = iter(arrays)
        leaves = [
            next(remaining) if is_array else leaf for leaf, is_array in zip(self.static_leaves, self.is_array)
        ]
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def split_fn(fn: Callable, name: str = "the function") -> tuple[StaticFn, tuple]:
    """Splits ``fn`` into ``(static, arrays)`` with ``static.bind(arrays)`` equivalent to ``fn``.

    Args:
      fn: any callable: a ``functools.partial`` / ``jax.tree_util.Partial`` binding weights,
        another pytree callable, or a plain function or closure (see the module docstring).
      name: how error messages call ``fn`` (e.g. ``"g_fn"``).

    Returns:
      ``static``: a hashable ``StaticFn``; ``arrays``: tuple of the array leaves of ``fn`` as
      jax arrays, in tree order (empty for a plain function).

    Raises:
      JaxlogitError: if a non-array leaf of ``fn`` cannot be hashed.
    """
    leaves, treedef = jax.tree_util.tree_flatten(_as_pytree(fn))
    is_array = tuple(_is_array(leaf) for leaf in leaves)
    static_leaves = tuple(None if array else leaf for leaf, array in zip(leaves, is_array))
    for leaf in static_leaves:
        try:
            hash(leaf)
        except TypeError:
            raise JaxlogitError(
                f"{name} holds an unhashable non-array value of type {type(leaf).__name__}; make it hashable "
                "(e.g. a frozen dataclass), close over it in a plain function, or bind only arrays with "
                "jax.tree_util.Partial(apply_fn, weights)"
            ) from None
    arrays = tuple(jnp.asarray(leaf) for leaf, array in zip(leaves, is_array) if array)
    return StaticFn(treedef, static_leaves, is_array), arrays
