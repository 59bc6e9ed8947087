"""Subsets of a split that mean something: ``--train-limit``/``--test-limit N`` on ImageNet.

The first N images of a class-sorted split (ImageNet's folders, or its TFDS records sorted by
class) hold a few classes only; ``balanced_indices`` takes N images spread evenly over the
classes, drawn with a seeded key, and ``SubsetSplit`` presents them as a split of their own.
"""

from __future__ import annotations

import functools
import hashlib

import jax
import numpy as np

from jaxlogit import _digest
from jaxlogit.data._split import Split


def balanced_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices spread as evenly as possible over the classes present, drawn with ``seed``.

    The indices are shuffled with ``jax.random.permutation(key(seed))``; then the k-th image of
    every class (in that order) comes before the (k+1)-th of any class, and the first ``n`` are
    kept. So each class gets ``n // K`` or one more (K classes present), or all it has if fewer.

    Args:
      labels: int ``(N,)`` classes of the split.
      n: how many to keep (all if ``n >= N``).
      seed: root of the shuffle (``--subset-seed``).

    Returns:
      int64 ``(min(n, N),)`` sorted indices into the split.
    """
    labels = np.asarray(labels)
    if n >= labels.size:
        return np.arange(labels.size, dtype=np.int64)
    order = np.asarray(jax.random.permutation(jax.random.key(seed), labels.size))
    shuffled = labels[order]
    by_class = np.argsort(shuffled, kind="stable")
    classes = shuffled[by_class]
    rank = np.empty(labels.size, np.int64)
    rank[by_class] = np.arange(labels.size) - np.searchsorted(classes, classes, side="left")
    first = np.lexsort((np.arange(labels.size), rank))[:n]  # by rank, then by shuffled position
    return np.sort(order[first]).astype(np.int64)


class SubsetSplit(Split):
    """The images of ``base`` at ``indices``, as a split: index i is ``base``'s ``indices[i]``.

    Its fingerprint is that of ``base`` and the indices, so every cache key made from it differs
    from the whole split's and from another subset's.

    Args:
      base: the whole split.
      indices: int ``(M,)`` indices into ``base``.
      rule: how the subset was chosen, for reports (e.g. ``"class-balanced, seed 0"``).
    """

    def __init__(self, base: Split, indices: np.ndarray, rule: str = ""):
        self.base = base
        self.indices = np.asarray(indices, np.int64)
        self.indices.setflags(write=False)
        self.rule = rule

    @functools.cached_property
    def labels(self) -> np.ndarray:
        labels = np.asarray(self.base.labels)[self.indices]
        labels.setflags(write=False)
        return labels

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.base.class_names

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.base.image_shape

    @property
    def file_names(self) -> tuple[str, ...]:
        names = self.base.file_names
        return tuple(names[i] for i in self.indices)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the base split's fingerprint and the indices."""
        digest = hashlib.sha256(self.base.fingerprint.encode())
        digest.update(_digest.arrays_sha256([self.indices]).encode())
        return digest.hexdigest()

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        return self.base.get_batch(self.indices[np.asarray(indices, np.int64).reshape(-1)])


def subset_rule(balanced: bool, limit: int | None, seed: int) -> str:
    """One line for reports: which images ``limit`` keeps."""
    if limit is None:
        return "all images"
    if balanced:
        return f"{limit} images, class-balanced, drawn with seed {seed} (--subset-seed)"
    return f"the first {limit} images"


def limited(split: Split, limit: int | None, *, balanced: bool, seed: int = 0) -> Split:
    """``split`` cut to ``limit`` images when ``balanced`` (a ``SubsetSplit``), else ``split`` itself
    (the caller keeps the first ``limit``, whose cache keys predate subsets)."""
    if limit is None or not balanced:
        return split
    return SubsetSplit(split, balanced_indices(split.labels, limit, seed), subset_rule(True, limit, seed))
