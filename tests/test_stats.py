"""The report intervals: Wilson's formula, its coverage, the paired bootstrap."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxlogit import stats
from jaxlogit.errors import JaxlogitError


def test_wilson_matches_the_formula_at_known_points():
    # 8/10 at 95% (z = 1.959964): the textbook (0.4902, 0.9433); 0/n: [0, z²/(n + z²)].
    low, high = stats.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.49016, 0.94331), abs=1e-5)
    z2 = 1.959963984540054**2
    assert stats.wilson_interval(0, 20) == pytest.approx((0.0, z2 / (20 + z2)))
    assert stats.wilson_interval(20, 20) == pytest.approx((20 / (20 + z2), 1.0))
    # n = 1,000 at 75%: about +-2.7 points, as the README's issue says.
    low, high = stats.wilson_interval(750, 1000)
    assert 0.721 < low < 0.724 and 0.774 < high < 0.777


def test_wilson_covers_the_true_proportion_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for p, n in ((0.3, 50), (0.9, 200), (0.02, 300)):
        counts = rng.binomial(n, p, size=2000)
        covered = [low <= p <= high for low, high in (stats.wilson_interval(int(c), n) for c in counts)]
        assert 0.92 <= np.mean(covered) <= 0.98, (p, n, np.mean(covered))


def test_accuracy_is_a_percentage_inside_its_interval():
    est = stats.accuracy(np.array([True] * 75 + [False] * 25))
    assert est.value == 75.0 and est.low < 75.0 < est.high
    assert all(np.isnan(stats.accuracy(np.zeros(0, bool))))


def test_bootstrap_of_identical_outcomes_is_a_zero_width_interval():
    a = np.random.default_rng(1).random(500) < 0.7
    est = stats.paired_bootstrap_difference(a, a, key=jax.random.key(0))
    assert tuple(est) == (0.0, 0.0, 0.0)


def test_bootstrap_is_paired_and_reproducible():
    rng = np.random.default_rng(2)
    b = rng.random(1000) < 0.5
    a = b.copy()
    a[:50] = ~a[:50]  # differs from b on 50 images only
    est = stats.paired_bootstrap_difference(a, b, key=jax.random.key(3))
    assert est == stats.paired_bootstrap_difference(a, b, key=jax.random.key(3))
    assert est.low <= est.value <= est.high
    # Paired: the width reflects the 50 differing images, far narrower than two independent
    # accuracies at 50% on 1,000 images (a difference of two independent ones: about +-4.4).
    assert est.high - est.low < 3.5
    ones = stats.paired_bootstrap_difference(np.ones(40), np.zeros(40), key=jax.random.key(0))
    assert tuple(ones) == (100.0, 100.0, 100.0)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(JaxlogitError, match="successes"):
        stats.wilson_interval(11, 10)
    with pytest.raises(JaxlogitError, match="paired"):
        stats.paired_bootstrap_difference(np.ones(3), np.ones(4), key=jax.random.key(0))
    with pytest.raises(JaxlogitError, match="confidence"):
        stats.wilson_interval(1, 2, confidence=1.5)


def test_mean_sd_over_seeds():
    assert stats.mean_sd([70.0, 72.0, 74.0]) == pytest.approx((72.0, 2.0))
    assert stats.mean_sd([70.0]) == (70.0, 0.0)


def test_bootstrap_counts_match_resampling_the_rows():
    rng = np.random.default_rng(4)
    a, b = rng.random(3000) < 0.8, rng.random(3000) < 0.7
    est = stats.paired_bootstrap_difference(a, b, key=jax.random.key(1))
    rows = rng.integers(0, a.size, (2000, a.size))
    resampled = 100 * (a.astype(float) - b)[rows].mean(axis=1)
    assert est.low == pytest.approx(np.percentile(resampled, 2.5), abs=0.4)
    assert est.high == pytest.approx(np.percentile(resampled, 97.5), abs=0.4)
    with pytest.raises(JaxlogitError, match="0/1"):
        stats.paired_bootstrap_difference(np.full(3, 0.5), np.ones(3), key=jax.random.key(0))
