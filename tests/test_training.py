"""Backbone training: learning happens, a crash resumes to the same result, the cache is reused."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxlogit import data, training

TINY = training.BackboneConfig(arch="resnet_tiny", epochs=2, batch_size=64, learning_rate=1e-2)


@pytest.fixture(scope="module")
def small_split():
    full = data.load("fashion_mnist", "train")
    return data.ArraySplit(np.asarray(full.images[:2048]), np.asarray(full.labels[:2048]), full.class_names)


def leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_training_lowers_the_loss_and_learns(small_split, tmp_path):
    variables = training.train(TINY, small_split, tmp_path / "w", progress=False)
    backbone = training.Backbone(
        training.models.create("resnet_tiny"), variables, {"mean": (0.286,), "std": (0.353,)}, tmp_path
    )
    acc = training.accuracy(backbone.logits_fn(), small_split)
    assert acc > 0.35  # 10 classes: chance is 0.1; measured ~0.48


def test_crash_after_an_epoch_resumes_to_the_uninterrupted_result(small_split, tmp_path, monkeypatch):
    reference = training.train(TINY, small_split, tmp_path / "ref", progress=False)

    real_order = training.epoch_order

    def crash_in_second_epoch(seed, epoch, n):
        if epoch == 1:
            raise KeyboardInterrupt("simulated crash")
        return real_order(seed, epoch, n)

    monkeypatch.setattr(training, "epoch_order", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        training.train(TINY, small_split, tmp_path / "crash", progress=False)
    monkeypatch.setattr(training, "epoch_order", real_order)
    resumed = training.train(TINY, small_split, tmp_path / "crash", progress=False)
    assert leaves_equal(reference, resumed)


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = training.epoch_order(0, 3, 100), training.epoch_order(0, 3, 100)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, training.epoch_order(0, 4, 100))
    assert not np.array_equal(a, training.epoch_order(1, 3, 100))


def test_ensure_backbone_reuses_the_cache(trained_compact, test_cache, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a cached backbone was trained again")

    monkeypatch.setattr(training, "train", no_training)
    from conftest import TEST_BACKBONE

    again = training.ensure_backbone(TEST_BACKBONE, cache=test_cache, progress=False)
    assert again.directory == trained_compact.backbone.directory
    assert leaves_equal(again.variables, trained_compact.backbone.variables)


def test_another_config_gets_another_cache_folder(test_cache):
    a = training.backbone_dir(TINY, test_cache)
    assert training.backbone_dir(dataclasses.replace(TINY, seed=1), test_cache) != a
    assert training.backbone_dir(TINY, test_cache) == a


def test_default_configs_name_every_compact_arch():
    for arch in ("vgg_compact", "resnet_compact", "densenet_compact"):
        config = training.default_config(arch)
        assert config.arch == arch and config.epochs >= 2
