"""Tables 1 and the p trade-off end to end on a small setup: numbers that agree with the
backbone and the stores they come from, caching, and the direction of Algorithm 1's p."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TEST_BACKBONE

from experiments import _common, table1, tradeoff
from jaxlogit import data, pipeline, training

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
        assert report["rows"][1]["eps"] in config.eps_grid
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
