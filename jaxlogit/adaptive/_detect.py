"""The corrector as a detector: its score, its flag and a rank-based ROC AUC (numpy only)."""

from __future__ import annotations

import numpy as np


def _softmax(z: np.ndarray) -> np.ndarray:
    shifted = np.asarray(z, np.float64) - np.max(z, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def detection_scores(logits: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """How much the correction takes away from the backbone's prediction, (N,) in [-1, 1].

    ``score = softmax(z)[k] - softmax(g(z))[k]`` with ``k = argmax z``: near 0 when the corrector
    agrees with the backbone, near 1 when it moves all confidence away from the backbone's class.
    Higher means more suspicious.

    Args:
      logits: (N, C) backbone logits ``z``.
      corrected: (N, C) corrected logits ``g(z)``.
    """
    predicted = np.argmax(logits, axis=-1)[:, None]
    before = np.take_along_axis(_softmax(logits), predicted, axis=-1)[:, 0]
    after = np.take_along_axis(_softmax(corrected), predicted, axis=-1)[:, 0]
    return before - after


def flagged(logits: np.ndarray, corrected: np.ndarray) -> np.ndarray:
    """(N,) bool: the corrector changes the backbone's prediction (the detector's hard decision)."""
    return np.argmax(corrected, axis=-1) != np.argmax(logits, axis=-1)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values`` (N,), tied values sharing the mean of their ranks."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of the 1-based ranks starts+1 .. ends
    ranks = np.empty(values.size, np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of a score separating ``positive`` from ``negative`` samples.

    Mann-Whitney form: the probability that a random positive scores higher than a random
    negative, ties counting one half. 1.0 is a perfect detector, 0.5 chance.

    Args:
      negative: (N0,) scores of negatives (clean inputs).
      positive: (N1,) scores of positives (adversarial inputs).
    """
    negative, positive = np.ravel(negative), np.ravel(positive)
    if not negative.size or not positive.size:
        return float("nan")
    ranks = average_ranks(np.concatenate([negative, positive]))
    positive_rank_sum = np.sum(ranks[negative.size :])
    n1 = positive.size
    return float((positive_rank_sum - n1 * (n1 + 1) / 2.0) / (n1 * negative.size))
