"""The explanation experiments' logic on a crafted corrector: rank correlation, the Figure 4
example rule, supporting ablation vs random control, bar charts labelled with class names."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _common, ablation_supporting, bhattacharyya, supporting_classes
from experiments import _explain_common as ec
from jaxlogit import data
from jaxlogit.cli._explain import vote_table

C, SUPPORT = 10, (7, 8, 9)
PRIMARY, SECONDARY = 3.0, 2.0
"""Crafted corrector: true classes 0..6 are pushed up by relu of the logits of classes 7, 8, 9,
most by their *primary* support ``7 + i % 3``."""
_BOOST = jnp.full((3, 7), SECONDARY).at[jnp.arange(7) % 3, jnp.arange(7)].set(PRIMARY)  # (3, 7)


def crafted_g(z: jax.Array) -> jax.Array:
    """``g_i = z_i + sum_j BOOST[j, i] relu(z_{7+j})`` for ``i < 7``, identity on 7..9: (B, 10) -> (B, 10)."""
    return z.at[:, :7].add(jax.nn.relu(z[:, 7:]) @ _BOOST)


def crafted_logits(batch: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adversarial logits the backbone gets wrong and ``crafted_g`` corrects only through 7..9.

    Class ``a`` (adversarial) has 5, the true class ``y`` 3, ``y``'s primary support 4, the
    other supports 1: ``g_y = 3 + 12 + 2 + 2 = 19 > g_a = 5 + 8 + 3 + 2 = 18``; with 7..9
    lowered by 20, ``g_a = 5 > g_y = 3``.
    """
    y = np.arange(batch) % 7
    adversarial = np.where(y == 6, 4, y + 1)  # a % 3 != y % 3
    z = np.zeros((batch, C), np.float32)
    rows = np.arange(batch)
    z[rows, adversarial], z[rows, y] = 5.0, 3.0
    z[:, 7:] = 1.0
    z[rows, 7 + y % 3] = 4.0
    return z, y.astype(np.int32), adversarial


def test_ranks_average_ties_and_spearman_matches_hand_computation():
    np.testing.assert_array_equal(ec.ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])
    # one swapped pair of four: 1 - 6 * (1 + 1) / (4 * 15) = 0.8
    assert ec.spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 40, 30])) == pytest.approx(0.8)
    # ties: ranks (1, 2.5, 2.5, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert ec.spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(np.sqrt(0.9))
    assert ec.spearman(np.array([1, 2, 3]), np.array([9, 5, 1])) == pytest.approx(-1.0)
    assert np.isnan(ec.spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))


def test_paper_overlap_and_mean_transfer_have_the_same_order():
    # PGD-MIM 0.9662 / 78.0, DC 0.9222 / 46.35, PD 0.9004 / 27.25, PC 0.8623 / 7.35 by hand.
    overlap, transfer = bhattacharyya.paper_pair_values(*bhattacharyya.paper_matrices())
    np.testing.assert_allclose(transfer, [78.0, 46.35, 27.25, 7.35])
    assert ec.spearman(overlap, transfer) == pytest.approx(1.0)
    matrix = np.arange(16.0).reshape(4, 4)
    assert bhattacharyya.off_diagonal(matrix).tolist() == [1, 2, 3, 4, 6, 7, 8, 9, 11, 12, 13, 14]
    assert bhattacharyya.unordered_pairs(matrix).tolist() == [2.5, 5.0, 7.5, 7.5, 10.0, 12.5]


def test_instance_is_the_first_example_every_attack_fools_and_every_corrector_corrects():
    fooled = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    corrected = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], bool)
    assert ec.choose_instance(fooled, corrected) == (2, True)  # 0: attack 2 fails, 1: corrector 0 fails
    assert ec.choose_instance(fooled, ~corrected) == (0, False)  # nobody qualifies: the first


def test_supporting_classes_of_the_crafted_corrector_are_its_boosting_classes():
    z, y, _ = crafted_logits()
    classes, counts = ec.supporting(crafted_g, z, y, k=3)
    assert sorted(classes.tolist()) == list(SUPPORT)
    assert counts.sum() == 3 * len(y)


def test_lowering_supporting_classes_breaks_the_correction_more_than_random_classes():
    z, y, adversarial = crafted_logits()
    assert np.all(ec.corrected_classes(crafted_g, z) == y)  # the crafted corrector corrects all
    classes, _ = ec.supporting(crafted_g, z, y, k=3)
    result = ablation_supporting.compare(crafted_g, z, y, classes, key=jax.random.key(0))
    supporting, control = result["supporting"], result["control"]
    assert supporting["n"] == control["n"] == len(y)
    assert supporting["fails"] == 100.0 and supporting["adversarial"] == 100.0
    assert control["fails"] < 80.0  # ~53%: y or its primary support hit
    assert supporting["n_y_kept"] == len(y) and control["n_y_kept"] < len(y)


def test_random_control_classes_are_distinct_and_follow_the_key():
    a = ablation_supporting.random_classes(60, C, 3, key=jax.random.key(1))
    assert a.shape == (60, 3) and a.min() >= 0 and a.max() < C
    assert all(len(set(row)) == 3 for row in a.tolist())
    np.testing.assert_array_equal(a, ablation_supporting.random_classes(60, C, 3, key=jax.random.key(1)))
    assert not np.array_equal(a, ablation_supporting.random_classes(60, C, 3, key=jax.random.key(2)))


def test_bar_chart_png_is_labelled_with_class_names(tmp_path):
    z, y, _ = crafted_logits()
    names = data.FASHION_MNIST_CLASS_NAMES
    attack = ec.AttackLogits("pgd", crafted_g, {"adv_logits": z, "labels": y})
    result = supporting_classes.attack_supporting(attack, 3, names)
    fig = supporting_classes.figure("pgd", result)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == [names[c] for c in result["classes"]] and set(labels) == {names[c] for c in SUPPORT}
    _common.write_report(tmp_path, "supporting_classes", "md", result, figures={"supporting_pgd.png": fig})
    png = (tmp_path / "supporting_pgd.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    assert json.loads((tmp_path / "supporting_classes.json").read_text())["names"] == labels


def test_cli_vote_table_names_classes_with_votes_and_shares():
    lines = vote_table(np.array([2, 0]), np.array([5, 0, 15]), ("T-shirt", "Trouser", "Pullover"))
    assert lines[1].split() == ["1", "2", "Pullover", "15", "75.0%"]
    assert lines[2].split() == ["2", "0", "T-shirt", "5", "25.0%"]


def test_cli_explain_is_registered_and_rejects_an_unknown_arch(capsys):
    from jaxlogit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "--arch", "nope", "--attack", "pgd"])
    assert exit_info.value.code == 2
    assert "unknown arch 'nope'" in capsys.readouterr().err
