"""Attack strength on a trained compact backbone (the ``trained_compact`` fixture, conftest.py).

The paper's settings: PGD/MIM at eps=16/255 must drive accuracy far below clean (on 28x28
images a few percent may survive, unlike ImageNet's ~0%); DeepFool and C&W must fool >= 95%
of the images with a median L2 well below that of the L-inf attacks' perturbations.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxlogit import attacks

pytestmark = pytest.mark.slow

N = 128  # images per attack: C&W runs 100 gradient steps on each


@pytest.fixture(scope="module")
def batch(trained_compact):
    x, y = np.asarray(trained_compact.x[:N]), np.asarray(trained_compact.y[:N])
    return trained_compact.logits_fn, x, y


@pytest.fixture(scope="module")
def linf_results(batch):
    logits_fn, x, y = batch
    return {
        "pgd": attacks.pgd(logits_fn, x, y, key=jax.random.key(0)),
        "mim": attacks.mim(logits_fn, x, y),
    }


def accuracy(res, y) -> float:
    return float(np.mean(np.argmax(np.asarray(res.logits), -1) == y))


def l2_norms(res, x) -> np.ndarray:
    return np.linalg.norm((np.asarray(res.x_adv) - x).reshape(len(x), -1), axis=1)


def test_the_backbone_is_trained(trained_compact):
    assert trained_compact.clean_accuracy >= 0.8


@pytest.mark.parametrize("name", ["pgd", "mim"])
def test_linf_attacks_drive_accuracy_far_below_clean(trained_compact, batch, linf_results, name):
    _, x, y = batch
    res = linf_results[name]
    adversarial = accuracy(res, y)
    print(f"{name}: clean {trained_compact.clean_accuracy:.3f} -> adversarial {adversarial:.3f}")
    assert adversarial <= min(0.2, trained_compact.clean_accuracy / 4)
    assert float(np.max(np.asarray(res.norm))) <= 16 / 255 + 1e-6


@pytest.mark.parametrize("name", ["deepfool", "cw"])
def test_l2_attacks_fool_almost_all_with_small_perturbations(batch, linf_results, name):
    logits_fn, x, y = batch
    res = attacks.deepfool(logits_fn, x, y) if name == "deepfool" else attacks.cw_l2(logits_fn, x, y)
    success = np.asarray(res.success)
    median_l2 = float(np.median(np.asarray(res.norm)[success]))
    median_linf_attack_l2 = float(np.median(l2_norms(linf_results["pgd"], x)))
    print(f"{name}: success {success.mean():.3f}, median L2 {median_l2:.3f} "
          f"(PGD's median L2 {median_linf_attack_l2:.3f})")
    assert success.mean() >= 0.95
    assert median_l2 <= 0.5 * median_linf_attack_l2
