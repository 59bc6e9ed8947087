"""95% intervals for the accuracies the experiments report.

One proportion (an accuracy on n images) gets Wilson's score interval; a difference of two
accuracies on the same images (corrected minus uncorrected, one corrector minus another) gets a
paired bootstrap percentile interval, drawn from an explicit ``jax.random`` key.

Example:
    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.4902, 0.9433)
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

import jax
import numpy as np

from jaxlogit.errors import JaxlogitError

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000


class Estimate(NamedTuple):
    """A percentage with its interval: ``value`` in ``[low, high]``, all in percent."""

    value: float
    low: float
    high: float

    def rounded(self, digits: int = 2) -> list[float]:
        """``[value, low, high]`` rounded, for JSON reports."""
        return [round(float(v), digits) for v in self]


def _z(confidence: float) -> float:
    """The two-sided standard-normal quantile of ``confidence`` (1.96 for 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise JaxlogitError(f"confidence {confidence!r}: pass a level in (0, 1), e.g. 0.95")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval of a proportion ``successes / n``, as proportions in [0, 1].

    Args:
      successes: count of successes, ``0 <= successes <= n``.
      n: trials (>= 1).
      confidence: two-sided level.

    Returns:
      ``(low, high)``: ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``.
    """
    if n < 1 or not 0 <= successes <= n:
        raise JaxlogitError(f"{successes} successes of {n} trials: need n >= 1 and 0 <= successes <= n")
    z = _z(confidence)
    p = successes / n
    denominator = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half = z * float(np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def accuracy(correct: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Percent of ``correct`` (N,) bool with its Wilson interval (NaNs for N = 0)."""
    correct = np.asarray(correct, bool)
    if correct.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    low, high = wilson_interval(int(correct.sum()), correct.size, confidence)
    return Estimate(100.0 * float(correct.mean()), 100.0 * low, 100.0 * high)


def paired_bootstrap_difference(
    a: np.ndarray,
    b: np.ndarray,
    *,
    key: jax.Array,
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
) -> Estimate:
    """Percent-point difference ``mean(a) - mean(b)`` of paired per-image 0/1 outcomes, with the
    percentile interval of ``samples`` bootstrap resamples of the images (the same rows for both).

    Resampling n images with replacement only moves the counts of images where ``a`` wins
    (``a - b = 1``) and where ``b`` wins (``-1``), which are multinomial; they are drawn as two
    binomials, so the cost does not grow with n (the distribution is that of resampling rows).

    Args:
      a, b: (N,) bool or 0/1 outcomes of the same N images (e.g. corrected, uncorrected correct).
      key: a ``jax.random`` key: the same key gives the same interval.
      samples: bootstrap resamples.
      confidence: two-sided level.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise JaxlogitError(f"paired outcomes need two (N,) arrays, N >= 1; got {a.shape} and {b.shape}")
    if not np.all(np.isin(a, (0, 1)) & np.isin(b, (0, 1))):
        raise JaxlogitError("paired outcomes must be 0/1 or bool (correct or not per image)")
    _z(confidence)  # validates the level
    n, d = a.size, a - b
    p_win, p_loss = float(np.mean(d > 0)), float(np.mean(d < 0))
    win_key, loss_key = jax.random.split(key)
    wins = np.asarray(jax.random.binomial(win_key, n, p_win, shape=(samples,)))
    rest_p = p_loss / (1.0 - p_win) if p_win < 1.0 else 0.0
    losses = np.asarray(jax.random.binomial(loss_key, n - wins, min(rest_p, 1.0)))
    differences = (wins - losses) / n
    tail = 100.0 * (1 - confidence) / 2
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    return Estimate(100.0 * float(np.mean(d)), 100.0 * float(low), 100.0 * float(high))


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for one value) of a few seeds' results."""
    values = np.asarray(values, np.float64)
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), sd


def format_estimate(estimate: Estimate | list) -> str:
    """``75.40 [72.6, 78.0]`` for a table cell."""
    value, low, high = estimate
    return f"{value:.2f} [{low:.1f}, {high:.1f}]"
