"""Tables 1 and the p trade-off end to end on a small setup: numbers that agree with the
backbone and the stores they come from, caching, and the direction of Algorithm 1's p."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from conftest import TEST_BACKBONE

from experiments import (
    _common,
    _probe,
    backbone_transfer,
    jacobian_stats,
    learning_curve,
    table1,
    table2,
    table3,
    tradeoff,
    training_curves,
)
from jaxlogit import data, pipeline, stats, training

TEST_LIMIT, TRAIN_LIMIT, PER_CLASS = 300, 512, 5


@pytest.fixture
def small_setup(trained_compact, test_cache, monkeypatch) -> _common.Setup:
    """The default setup shrunk to the session's 1-epoch ResNet and a few hundred images."""
    monkeypatch.setattr(training, "default_config", lambda arch, **kw: TEST_BACKBONE)
    corrector = pipeline.CorrectorConfig(hidden=512, epochs=15, lr=1e-3)
    return _common.Setup(
        backbones=("resnet_compact",),
        train_limit=TRAIN_LIMIT,
        test_limit=TEST_LIMIT,
        per_class=PER_CLASS,
        corrector=corrector,
        cache_dir=str(test_cache),
        seeds=2,
    )


def test_table1_rows_agree_with_the_backbone_and_rerun_from_the_cache(small_setup, trained_compact, tmp_path):
    config = table1.Table1Config(probe=64)
    table1.run(small_setup, tmp_path / "a", config)
    report = json.loads((tmp_path / "a" / "table1.json").read_text())
    first = report["rows"][0]
    split = data.load("fashion_mnist", "test")
    x, y = split.get_batch(np.arange(TEST_LIMIT))
    predictions = np.concatenate(
        [
            np.argmax(np.asarray(trained_compact.logits_fn(x[i : i + 100])), -1)
            for i in range(0, TEST_LIMIT, 100)
        ]
    )
    assert first["full"]["clean"] == pytest.approx(100 * np.mean(predictions == y), abs=0.01)
    assert first["selected"]["clean"] == 100.0  # the selected set is what the ResNet gets right
    assert report["selected_size"] == 10 * PER_CLASS
    assert first["full"]["adv"] < first["full"]["clean"] - 50
    weak = first["full"]["adv"] > config.max_accuracy
    assert len(report["rows"]) == (2 if weak else 1)  # a stronger-epsilon row only when 16/255 leaves > 1%
    if weak:
        chosen = report["rows"][1]["eps"]
        assert chosen in config.eps_grid
        # The probe reads training images: the chosen epsilon fools >= 99% of the first 64, every
        # smaller one of the grid fewer (stores cached by the run: nothing is attacked here).
        for eps in config.eps_grid[: config.eps_grid.index(chosen) + 1]:
            attack = pipeline.AttackConfig("pgd", eps=eps)
            fooled = _probe.fooled_percent(small_setup, "resnet_compact", attack, config.probe)
            assert (fooled >= 99.0) == (eps == chosen)
    check_intervals_seeds_and_success_mask(small_setup, report, config)
    # Everything is cached: a second run reads the same artifacts and writes the same numbers.
    table1.run(small_setup, tmp_path / "b", config)
    assert json.loads((tmp_path / "b" / "table1.json").read_text())["rows"] == report["rows"]


def test_tradeoff_more_clean_logits_keep_more_clean_accuracy(small_setup, tmp_path):
    tradeoff.run(small_setup, tmp_path, p_values=(0.05, 0.95))
    low, high = json.loads((tmp_path / "tradeoff.json").read_text())["results"]
    assert (low["p_clean"], high["p_clean"]) == (0.05, 0.95)
    assert high["clean_corrected"] > low["clean_corrected"]
    assert low["adv_corrected"] > high["adv_corrected"]
    assert low["clean"] == high["clean"] and low["adv"] == high["adv"]  # same backbone, same stores


def check_intervals_seeds_and_success_mask(setup, report, config):
    """Every accuracy of Table 1 lies in its Wilson interval; corrected ones are the mean of the
    seeds' values; the "fooled only" numbers are those of the stored success mask."""
    first = report["rows"][0]
    for part in ("full", "selected"):
        result = first[part]
        for name in ("clean", "clean_corrected", "adv", "adv_corrected"):
            low, high = result["interval"][name]
            assert low <= result[name] <= high
        hits = round(result["clean"] * result["n"] / 100)
        assert result["interval"]["clean"] == pytest.approx(
            [100 * v for v in stats.wilson_interval(hits, result["n"])], abs=0.01
        )
        seeds = result["seeds"]["adv_corrected"]
        assert len(seeds) == setup.seeds
        assert result["adv_corrected"] == pytest.approx(np.mean(seeds), abs=0.01)
        assert result["sd"]["adv_corrected"] == pytest.approx(np.std(seeds, ddof=1), abs=0.01)
        seed0_drop = result["clean"] - result["seeds"]["clean_corrected"][0]
        assert result["clean_drop"][0] == pytest.approx(seed0_drop)
    backbone = _common.load_backbone(setup, "resnet_compact")
    test = _common.logits(setup, backbone, pipeline.AttackConfig("pgd", eps=config.eps), "test")
    success = np.asarray(test["success"])
    attacked = first["full"]["attacked"]
    assert attacked["n"] == int(success.sum()) and attacked["adv"] == 0.0  # fooled: wrong by definition
    corrector = _common.corrector_for(setup, backbone, pipeline.AttackConfig("pgd", eps=config.eps))
    corrected = corrector.predict_classes(np.asarray(test["adv_logits"])[success])
    assert attacked["seeds"]["adv_corrected"][0] == pytest.approx(
        100 * np.mean(corrected == np.asarray(test["labels"])[success]), abs=0.01
    )


def test_tables_2_and_3_add_the_first_c_and_w_setting_that_fools_99_percent(monkeypatch, tmp_path):
    """With a probe where the paper's C&W fools 66% and the grid's second setting 100%, both
    tables show the paper's row and that one; "fooled only" numbers follow the success mask."""
    fooled = {pipeline.AttackConfig("cw"): 66.0, _probe.CW_GRID[0]: 98.0, _probe.CW_GRID[1]: 100.0}
    probed = []

    def fake_probe(setup, arch, attack, n):
        probed.append(attack)
        return fooled.get(attack, 100.0)

    labels = np.arange(6) % 3
    clean = np.eye(3)[labels] * 5.0
    adv = np.eye(3)[(labels + 1) % 3] * 5.0
    adv[:2] = clean[:2]  # the attack failed on the first two images
    rows = _common.Rows(clean_logits=clean, adv_logits=adv, labels=labels, success=np.arange(6) >= 2)
    # A "corrector" that undoes the shift on every adversarial logit it sees.
    fake = types.SimpleNamespace(
        predict_classes=lambda z: np.where(np.asarray(z).max(-1) > 4, np.asarray(z).argmax(-1), 0)
    )
    monkeypatch.setattr(_probe, "fooled_percent", fake_probe)
    monkeypatch.setattr(_common, "load_backbone", lambda *a, **k: None)
    monkeypatch.setattr(_common, "corrector_for", lambda *a, **k: fake)
    monkeypatch.setattr(_common, "selected_logits", lambda *a, **k: rows)
    setup = _common.Setup(seeds=2)
    markdown = table2.run(setup, tmp_path)
    report = json.loads((tmp_path / "table2.json").read_text())
    assert [r["label"] for r in report["rows"]] == [
        "pgd@16/255",
        "mim@16/255",
        "deepfool",
        "cw",
        "cw lr=0.1 steps=25",
    ]
    assert probed == [pipeline.AttackConfig("cw"), *_probe.CW_GRID[:2]]  # stops at the first that fools 99%
    strong = report["rows"][-1]
    assert strong["settings"]["lr"] == 0.1 and not strong["paper_setting"]
    assert strong["attacked"]["n"] == 4 and strong["attacked"]["share"] == pytest.approx(66.67)
    assert strong["adv"] == pytest.approx(100 * 2 / 6, abs=0.01) and strong["attacked"]["adv"] == 0.0
    assert markdown.count("| cw lr=0.1 steps=25 |") == 1 and "| - | - | - | - |" in markdown
    table3.run(setup, tmp_path)
    matrix = json.loads((tmp_path / "table3.json").read_text())
    assert np.shape(matrix["matrix"]) == (5, 5) and np.shape(matrix["fooled_only"]) == (5, 5, 3)


def test_backbone_transfer_and_training_curves_read_each_backbones_corrector(monkeypatch, tmp_path):
    """Backbone b's logits corrected by backbone a's corrector; curves from each corrector's meta."""
    labels = np.arange(8) % 4
    stores = {  # vgg's adversarial logits point one class up, resnet's two
        arch: {
            "clean_logits": np.eye(4)[labels],
            "adv_logits": np.eye(4)[(labels + shift) % 4],
            "labels": labels,
            "success": np.ones(8, bool),
        }
        for arch, shift in (("vgg_compact", 1), ("resnet_compact", 2))
    }

    def fake_corrector(setup, backbone, attack, config=None):
        shift = 1 if backbone == "vgg_compact" else 2  # undoes its own backbone's shift only
        curve = [0.5, 0.75, 0.7]
        return types.SimpleNamespace(
            predict_classes=lambda z: (np.asarray(z).argmax(-1) - shift) % 4,
            meta={"holdout_accuracy": curve, "best_epoch": 2},
        )

    monkeypatch.setattr(_common, "load_backbone", lambda setup, arch, **k: arch)
    monkeypatch.setattr(_common, "corrector_for", fake_corrector)
    monkeypatch.setattr(_common, "logits", lambda setup, backbone, attack, which, **k: stores[backbone])
    setup = _common.Setup(backbones=("vgg_compact", "resnet_compact"), train_limit=400)
    backbone_transfer.run(setup, tmp_path)
    report = json.loads((tmp_path / "backbone_transfer.json").read_text())
    adv = np.array(report["adv_logits"])[..., 0]
    np.testing.assert_array_equal(adv, [[100.0, 0.0], [0.0, 100.0]])  # only its own backbone's shift
    clean = np.array(report["clean_logits"])
    assert clean.shape == (2, 2, 3) and np.all(clean[..., 1] <= clean[..., 0])  # low <= value
    training_curves.run(setup, tmp_path)
    curves = json.loads((tmp_path / "training_curves.json").read_text())
    assert len(curves["curves"]) == 2 + 3  # Table 1's two backbones, Table 2's other three attacks
    assert curves["holdout_rows"] == 2 * 40 and (tmp_path / "training_curves.png").exists()
    assert "| 3 | 2 | 75.00 [" in (tmp_path / "training_curves.md").read_text()


def test_jacobian_stats_split_the_supporting_score_into_its_two_parts():
    # A linear corrector g(z) = z @ W.T has Jacobian W at every z: row y of W is H_yk, minus
    # its column means is -H_mean,k, and S_k is their sum.
    w = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 1, 1, 0])
    logits = np.eye(3, dtype=np.float32)[[2, 2, 0, 1]]  # adversarial classes 2, 2, 0, 1
    shares = jacobian_stats.top_class_shares(lambda z: z @ w.T, logits, labels, chunk_size=3)  # 2 blocks
    # H_yk tops: row 0 -> class 0 (= y for rows 0, 3), row 1 -> class 1 (= y for rows 1, 2).
    assert shares["n"] == 4 and shares["H_yk"]["true"][0] == 100.0
    # -H_mean,k = -(2/3, 1/3, 1/3): top class 1, the true class of rows 1-2, adversarial of row 3.
    assert shares["-H_mean,k"]["true"][0] == 50.0 and shares["-H_mean,k"]["adversarial"][0] == 25.0
    parts = jacobian_stats.score_parts(np.broadcast_to(w, (4, 3, 3)), labels)
    np.testing.assert_allclose(parts["S_k"], parts["H_yk"] + parts["-H_mean,k"])


def test_learning_curve_trains_one_corrector_per_training_set_size(monkeypatch, tmp_path):
    seen = []
    labels = np.arange(10) % 2
    test = {
        "clean_logits": np.eye(2)[labels],
        "adv_logits": np.eye(2)[1 - labels],
        "labels": labels,
        "success": np.ones(10, bool),
    }

    def fake_corrector(setup, backbone, attack, config=None):
        seen.append(setup.train_limit)
        right = 0 if setup.train_limit == 4 else 5  # more data: the corrector fixes 5 of 10 more
        return types.SimpleNamespace(
            predict_classes=lambda z: np.where(np.arange(10) < right, labels, np.asarray(z).argmax(-1))
        )

    monkeypatch.setattr(_common, "load_backbone", lambda setup, arch, **k: arch)
    monkeypatch.setattr(_common, "corrector_for", fake_corrector)
    monkeypatch.setattr(_common, "logits", lambda *a, **k: test)
    setup = _common.Setup(backbones=("resnet_compact",))
    learning_curve.run(setup, tmp_path, limits=(4, None))
    points = json.loads((tmp_path / "learning_curve.json").read_text())["points"]
    assert seen == [4, None] and [p["train_limit"] for p in points] == [4, None]
    assert [p["adv_corrected"] for p in points] == [0.0, 50.0]
    assert "| resnet_compact | 60,000 |" in (tmp_path / "learning_curve.md").read_text()
