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
from jaxlogit import corrector, explain, paths, pipeline, stats, store
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


def tree_equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def produce(start: int, stop: int) -> dict:
    """Rows ``[start, stop)``: clean logits peak at the label, adversarial ones (all raised by 3, as
    PGD raises the mean logit) at the next class."""
    rng = np.random.default_rng(start)
    labels = rng.integers(0, C, stop - start).astype(np.int32)
    clean = (3.0 * np.eye(C)[labels] + rng.normal(size=(len(labels), C))).astype(np.float32)
    adv = (np.roll(clean, 1, axis=1) + 3.0 + 0.5 * rng.normal(size=clean.shape)).astype(np.float32)
    success, norm = np.ones(len(labels), bool), np.ones(len(labels), np.float32)
    return {"clean_logits": clean, "adv_logits": adv, "labels": labels, "success": success, "norm": norm}


def training_mode(module: nn.Module, params, z: jax.Array, key: jax.Array) -> jax.Array:
    """``module`` applied to ``z`` in training mode (dropout on, drawn from ``key``)."""
    return module.apply({"params": params}, z, deterministic=False, rngs={"dropout": key})


def test_depth_one_is_the_corrector_as_before_in_params_and_in_training_mode():
    module, before = corrector.Corrector(C, hidden=D), OneHiddenLayer(C, D)

    @jax.jit  # one compile for all of it
    def both(key, z):
        params = [m.init(key, jnp.zeros((1, C)))["params"] for m in (module, before)]
        return params, [training_mode(m, p, z, jax.random.key(5)) for m, p in zip((module, before), params)]

    z = np.random.default_rng(4).normal(size=(8, C)).astype(np.float32)
    (params, old_params), (out, old_out) = both(jax.random.key(3), z)
    assert tree_equal(params, old_params)
    np.testing.assert_array_equal(out, old_out)
    assert corrector.module_from_params(params) == module and module.depth == 1


def test_depth_two_adds_one_d_by_d_hidden_layer_with_its_own_dropout():
    module = corrector.Corrector(C, hidden=D, depth=2)

    @jax.jit  # one compile for all of it
    def run(key, z):
        params = module.init(key, jnp.zeros((1, C)))["params"]
        # With the first layer's output zero, the output is the second layer's bias after
        # dropout: it varies with the dropout key only if the second layer drops units too.
        dead = {
            **params,
            "hidden": {"kernel": jnp.zeros((C, D)), "bias": -jnp.ones(D)},
            "hidden_2": {**params["hidden_2"], "bias": jnp.ones(D)},
        }
        dropped = [training_mode(module, dead, z, jax.random.key(k)) for k in (2, 3)]
        return params, module.apply({"params": params}, z), dropped

    z = np.random.default_rng(1).normal(size=(4, C)).astype(np.float32)
    params, out, dropped = jax.device_get(run(jax.random.key(0), z))
    assert jax.tree.map(np.shape, params) == {
        "hidden": {"kernel": (C, D), "bias": (D,)},
        "hidden_2": {"kernel": (D, D), "bias": (D,)},
        "output": {"kernel": (D, C), "bias": (C,)},
    }
    assert corrector.module_from_params(params) == module

    def layer(x, name):
        return x @ params[name]["kernel"] + params[name]["bias"]

    # Eval mode is the composition of the three layers.
    by_hand = layer(np.maximum(layer(np.maximum(layer(z, "hidden"), 0), "hidden_2"), 0), "output")
    np.testing.assert_allclose(out, by_hand, rtol=1e-5, atol=1e-5)
    assert not np.allclose(dropped[0], dropped[1])


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


def test_the_closed_form_jacobian_refuses_a_deeper_corrector_instead_of_ignoring_a_layer():
    layer = {"kernel": np.zeros((D, D), np.float32), "bias": np.zeros(D, np.float32)}
    params = {"hidden": {"kernel": np.zeros((C, D), np.float32), "bias": np.zeros(D, np.float32)}}
    params.update(
        hidden_2=layer, output={"kernel": np.zeros((D, C), np.float32), "bias": np.zeros(C, np.float32)}
    )
    with pytest.raises(JaxlogitError, match=r"depth > 1.*explain\.jacobian"):
        explain.two_layer_jacobian(params, np.zeros((2, C), np.float32))


def test_a_depth_two_corrector_learns_round_trips_and_keys_its_own_cache_entry(tmp_path, monkeypatch):
    logits = store.build(
        tmp_path / "logits" / "toy-pgd-train-0123", 1024, produce, shard_size=256, config={}, progress=False
    )
    one = pipeline.CorrectorConfig(hidden=64, epochs=3, batch_size=32, lr=1e-2)
    two = dataclasses.replace(one, depth=2)
    before = {k: v for k, v in dataclasses.asdict(one).items() if k != "depth"}  # the key as it was
    assert pipeline.corrector_key(one) == before and pipeline.corrector_key(two) == {**before, "depth": 2}
    results, train = [], corrector.train
    monkeypatch.setattr(corrector, "train", lambda *a, **k: results.append(train(*a, **k)) or results[-1])
    trained = pipeline.ensure_corrector(logits, two, cache=tmp_path, progress=False)
    (result,) = results
    steps = len(result.losses) // one.epochs
    assert np.mean(result.losses[-steps:]) < 0.7 * np.mean(result.losses[:steps])
    # The held-out set is half clean, half adversarial logits: leaving every logit as it is gets
    # about half right, so more than 70% means adversarial ones were corrected.
    assert np.max(result.holdout_accuracy) > 0.7
    key_one = {"logits": logits.directory.name, "corrector": before}
    assert trained.directory != paths.artifact_dir("correctors", "toy-pgd-train", key_one, str(tmp_path))
    assert json.loads((trained.directory / "meta.json").read_text())["architecture"]["depth"] == 2
    assert trained.module == corrector.Corrector(C, hidden=64, depth=2) == result.module
    assert tree_equal(trained.params, result.params)
    monkeypatch.setattr(corrector, "train", lambda *a, **k: pytest.fail("trained again instead of loading"))
    again = pipeline.ensure_corrector(logits, two, cache=tmp_path, progress=False)
    assert again.module == trained.module and again.directory == trained.directory
    assert tree_equal(again.params, trained.params)
    # A depth-1 corrector's meta.json is written as before depth existed (and so rebuilt with depth 1).
    params = {"hidden": {"kernel": np.zeros((C, D)), "bias": np.zeros(D)}}
    params["output"] = {"kernel": np.zeros((D, C)), "bias": np.zeros(C)}
    corrector.save(tmp_path / "one", params)
    architecture = json.loads((tmp_path / "one" / "meta.json").read_text())["architecture"]
    assert "depth" not in architecture and corrector.Corrector(**architecture) == corrector.Corrector(C, D)


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

    def exact_difference(a, b, *, key):  # the bootstrap's compile is not what this test is about
        return stats.Estimate(*[100 * float(np.mean(np.asarray(a, float) - np.asarray(b, float)))] * 3)

    monkeypatch.setattr(stats, "paired_bootstrap_difference", exact_difference)
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
        shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 2)))
        assert row["parameters"] == sum(leaf.size for leaf in jax.tree.leaves(shapes))
    assert "| C -> 4 -> 4 -> 4 -> C | 3 | 4 |" in markdown and "| C -> C | 0 | - |" in markdown
    assert markdown.count("| C -> 4 -> C |") == 2  # once per evaluation set
    assert (tmp_path / "capacity.md").read_text().startswith(markdown)
