"""Corrector depth (hidden layers of width D) and the capacity sweep: depth 1 is today's corrector,
bit for bit and cache key for key; deeper ones train, save, load and key their own cache entries."""

from __future__ import annotations

import dataclasses
import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _common, capacity
from jaxlogit import corrector, paths, pipeline, store
from jaxlogit.corrector._module import byte_dropout
from jaxlogit.errors import JaxlogitError

C, D = 6, 16


class OneHiddenLayer(nn.Module):
    """The corrector as it was before ``depth`` existed (C -> D -> C), to compare against."""

    num_classes: int
    hidden: int
    keep_prob: float = 0.5

    @nn.compact
    def __call__(self, z, *, deterministic=True):
        z = nn.relu(nn.Dense(self.hidden, name="hidden")(z))
        if not deterministic:
            z = byte_dropout(z, self.keep_prob, key=self.make_rng("dropout"))
        return nn.Dense(self.num_classes, name="output")(z)


def produce(start: int, stop: int) -> dict:
    """Rows ``[start, stop)``: clean logits peak at the label, adversarial ones (all raised by 3, as
    PGD raises the mean logit) at the next class."""
    rng = np.random.default_rng(start)
    labels = rng.integers(0, C, stop - start).astype(np.int32)
    clean = (3.0 * np.eye(C)[labels] + rng.normal(size=(len(labels), C))).astype(np.float32)
    adv = (np.roll(clean, 1, axis=1) + 3.0 + 0.5 * rng.normal(size=clean.shape)).astype(np.float32)
    success, norm = np.ones(len(labels), bool), np.ones(len(labels), np.float32)
    return {"clean_logits": clean, "adv_logits": adv, "labels": labels, "success": success, "norm": norm}


def test_depth_one_is_the_corrector_as_before_in_params_and_in_training_mode():
    key, z = jax.random.key(3), jax.random.normal(jax.random.key(4), (8, C))
    module = corrector.Corrector(C, hidden=D)
    params = corrector.init_params(module, key=key)
    before = OneHiddenLayer(C, D).init(key, jnp.zeros((1, C)))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(before)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(before)))
    rngs = {"dropout": jax.random.key(5)}
    np.testing.assert_array_equal(
        module.apply({"params": params}, z, deterministic=False, rngs=rngs),
        OneHiddenLayer(C, D).apply({"params": before}, z, deterministic=False, rngs=rngs),
    )
    assert corrector.module_from_params(params) == module and module.depth == 1


def test_depth_two_adds_one_d_by_d_hidden_layer_with_its_own_dropout():
    module = corrector.Corrector(C, hidden=D, depth=2)
    params = corrector.init_params(module, key=jax.random.key(0))
    assert jax.tree.map(jnp.shape, params) == {
        "hidden": {"kernel": (C, D), "bias": (D,)},
        "hidden_2": {"kernel": (D, D), "bias": (D,)},
        "output": {"kernel": (D, C), "bias": (C,)},
    }
    assert corrector.module_from_params(params) == module
    # Eval mode is the composition of the three layers.
    z = jax.random.normal(jax.random.key(1), (4, C))

    def layer(x, name):
        return x @ params[name]["kernel"] + params[name]["bias"]

    by_hand = layer(jax.nn.relu(layer(jax.nn.relu(layer(z, "hidden")), "hidden_2")), "output")
    np.testing.assert_allclose(module.apply({"params": params}, z), by_hand, rtol=1e-5, atol=1e-5)
    # In training mode the second layer drops units too: zeroing the first layer's output leaves
    # the second layer's bias, whose dropout then varies with the key.
    params["hidden"] = {"kernel": jnp.zeros((C, D)), "bias": -jnp.ones(D)}
    params["hidden_2"]["bias"] = jnp.ones(D)
    outs = [
        module.apply({"params": params}, z, deterministic=False, rngs={"dropout": jax.random.key(k)})
        for k in (2, 3)
    ]
    assert not np.allclose(outs[0], outs[1])


@pytest.mark.parametrize(
    ("hidden", "depth", "match"),
    [(None, 2, "needs hidden layers"), (D, 0, "integer >= 1"), (D, True, "integer >= 1"), (D, 1.5, ">= 1")],
)
def test_a_bad_depth_is_refused_by_module_config_and_train(hidden, depth, match):
    with pytest.raises(JaxlogitError, match=match):
        corrector.Corrector(C, hidden=hidden, depth=depth)
    with pytest.raises(JaxlogitError, match=match):
        pipeline.CorrectorConfig(hidden=hidden, depth=depth)
    with pytest.raises(JaxlogitError, match=match):
        corrector.train(
            produce(0, 64), num_classes=C, hidden=hidden, depth=depth, epochs=1, key=jax.random.key(0)
        )


def test_a_depth_two_corrector_learns_to_undo_the_attack():
    settings = dict(num_classes=C, hidden=64, depth=2, epochs=4, batch_size=32, lr=1e-2, progress=False)
    result = corrector.train(produce(0, 1024), key=jax.random.key(0), **settings)
    assert result.module.depth == 2 and "hidden_2" in result.params
    steps = len(result.losses) // 4
    assert np.mean(result.losses[-steps:]) < 0.7 * np.mean(result.losses[:steps])
    # The held-out set is half clean, half adversarial logits: leaving every logit as it is gets
    # about half right, so more than 70% means adversarial ones were corrected.
    assert np.nanmax(result.holdout_accuracy) > 0.7


def test_depth_keys_its_own_cache_entry_and_round_trips_while_depth_one_keeps_its_key(tmp_path, monkeypatch):
    logits = store.build(
        tmp_path / "logits" / "toy-pgd-train-0123", 160, produce, shard_size=64, config={}, progress=False
    )
    one = pipeline.CorrectorConfig(hidden=D, epochs=1, batch_size=16, lr=1e-3)
    two = dataclasses.replace(one, depth=2)
    assert "depth" not in pipeline.corrector_key(one) and pipeline.corrector_key(two)["depth"] == 2
    before = {k: v for k, v in dataclasses.asdict(one).items() if k != "depth"}  # the key as it was
    assert pipeline.corrector_key(one) == before
    trained_one = pipeline.ensure_corrector(logits, one, cache=tmp_path, progress=False)
    trained_two = pipeline.ensure_corrector(logits, two, cache=tmp_path, progress=False)
    old_directory = paths.artifact_dir(
        "correctors", "toy-pgd-train", {"logits": logits.directory.name, "corrector": before}, str(tmp_path)
    )
    assert trained_one.directory == old_directory != trained_two.directory
    architectures = [
        json.loads((t.directory / "meta.json").read_text())["architecture"]
        for t in (trained_one, trained_two)
    ]
    assert "depth" not in architectures[0] and architectures[1]["depth"] == 2  # depth-1 metas as before
    assert (trained_one.module.depth, trained_two.module.depth) == (1, 2) and "hidden_2" in trained_two.params
    monkeypatch.setattr(corrector, "train", lambda *a, **k: pytest.fail("trained again instead of loading"))
    again = pipeline.ensure_corrector(logits, two, cache=tmp_path, progress=False)
    assert again.module == trained_two.module and again.directory == trained_two.directory
    assert all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(trained_two.params))
    )
    z = produce(500, 520)["adv_logits"]
    np.testing.assert_array_equal(again.predict_classes(z), trained_two.predict_classes(z))


def test_capacity_trains_every_variant_once_and_reports_both_sets(monkeypatch, tmp_path):
    labels = np.arange(12) % 2
    stores = {
        which: {
            "clean_logits": np.eye(2)[labels[:n]],
            "adv_logits": np.eye(2)[1 - labels[:n]],
            "labels": labels[:n],
            "success": np.ones(n, bool),
        }
        for which, n in (("selected", 6), ("test", 12))
    }
    trained = []

    def fake_corrector(setup, backbone, attack, config=None):
        assert attack == pipeline.AttackConfig("pgd") and config.epochs == setup.corrector.epochs
        trained.append((config.hidden, config.depth))
        right = 0 if config.hidden is None else config.depth  # deeper: one more adversarial row right

        def predict(z):
            z = np.asarray(z)
            return np.where(np.arange(len(z)) < right, labels[: len(z)], z.argmax(-1))

        return types.SimpleNamespace(predict_classes=predict)

    monkeypatch.setattr(_common, "load_backbone", lambda setup, arch, **k: arch)
    monkeypatch.setattr(_common, "corrector_for", fake_corrector)
    monkeypatch.setattr(_common, "selected_logits", lambda *a, **k: stores["selected"])
    monkeypatch.setattr(_common, "logits", lambda setup, backbone, attack, which, **k: stores[which])
    setup = _common.Setup(backbones=("resnet_compact",))
    markdown = capacity.run(setup, tmp_path, widths=(3, 5), depths=(1, 2, 3), depth_width=4)
    expected = [(None, 1), (3, 1), (5, 1), (4, 1), (4, 2), (4, 3)]
    assert trained == expected  # C -> D=4 is both sweeps' row, trained once
    rows = json.loads((tmp_path / "capacity.json").read_text())["rows"]
    assert [(r["hidden"], r["depth"]) for r in rows] == expected
    for row in rows:
        right = 0 if row["hidden"] is None else row["depth"]
        assert row["selected"]["adv_corrected"] == pytest.approx(100 * right / 6, abs=0.01)
        assert row["full"]["adv_corrected"] == pytest.approx(100 * right / 12, abs=0.01)
        assert (row["selected"]["n"], row["full"]["n"]) == (6, 12)
        module = corrector.Corrector(2, hidden=row["hidden"], depth=row["depth"])
        params = corrector.init_params(module, key=jax.random.key(0))
        assert row["parameters"] == sum(leaf.size for leaf in jax.tree.leaves(params))
    assert "| C -> 4 -> 4 -> 4 -> C | 3 | 4 |" in markdown and "| C -> C | 0 | - |" in markdown
    assert markdown.count("| C -> 4 -> C |") == 2  # once per evaluation set
    assert (tmp_path / "capacity.md").read_text().startswith(markdown)
