"""Backbone zoo: compact variants' outputs and cost, BatchNorm/dropout modes, logits_fn,
checkpoints."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import models
from jaxlogit.errors import JaxlogitError

COMPACT = ["vgg_compact", "resnet_compact", "densenet_compact"]
TINY = ["vgg_tiny", "resnet_tiny", "densenet_tiny"]


def _images(shape, batch=3, seed=0) -> jnp.ndarray:
    return jax.random.uniform(jax.random.key(seed), (batch, *shape))


@functools.cache
def _model(name, seed=0):
    """(spec, module, variables), built once per test session."""
    spec = models.spec(name)
    module = models.create(name)
    return spec, module, models.init(module, jax.random.key(seed), spec.input_shape)


@functools.cache
def _apply(module):
    """``module.apply`` jitted once per module (eager flax compiles every op separately)."""
    return jax.jit(module.apply, static_argnames=("train", "mutable"))


def test_names_and_specs():
    assert models.names() == ["vgg16", "vgg16_bn", "resnet50", "densenet121", *COMPACT]
    assert set(TINY) <= set(models.names(include_test_only=True))
    resnet50 = models.spec("resnet50")
    assert (resnet50.input_shape, resnet50.num_classes, resnet50.std) == (
        (224, 224, 3),
        1000,
        (0.229, 0.224, 0.225),
    )
    compact = models.spec("densenet_compact")
    assert (compact.family, compact.input_shape, compact.mean) == ("densenet", (28, 28, 1), (0.2860,))


def test_unknown_name_lists_valid_names():
    with pytest.raises(JaxlogitError, match="unknown model 'resnet18'.*resnet50.*vgg_compact"):
        models.spec("resnet18")


@pytest.mark.parametrize("name", COMPACT)
def test_compact_models_are_small_and_cheap(name):
    spec, module, variables = _model(name)
    x = _images(spec.input_shape, batch=2)
    compiled = jax.jit(module.apply).lower(variables, x).compile()
    logits = compiled(variables, x)
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))
    params = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))
    assert 20_000 <= params <= 250_000
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    assert 3e6 <= cost["flops"] / 2 <= 15e6  # forward FLOPs per 28x28 image


@pytest.mark.parametrize("name", TINY)
def test_num_classes_sets_the_head(name):
    module = models.create(name, num_classes=7)
    x = jax.ShapeDtypeStruct((3, *models.spec(name).input_shape), jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.key(0), x)
    assert jax.eval_shape(module.apply, variables, x).shape == (3, 7)


def test_init_has_batch_stats_only_with_batch_norm():
    assert "batch_stats" in _model("vgg_tiny")[2]
    plain = models.VGG(config=(4, "M"), pool_size=(2, 2), hidden=8, num_classes=3)
    assert set(models.init(plain, jax.random.key(0), (8, 8, 1))) == {"params"}


@pytest.mark.parametrize("name", TINY)
def test_eval_mode_uses_running_stats(name):
    spec, module, variables = _model(name)
    x = _images(spec.input_shape)
    apply = _apply(module)
    full = apply(variables, x)
    # Eval mode: each image's logits are independent of the rest of the batch...
    others = x.at[1:].set(_images(spec.input_shape, batch=2, seed=1))
    np.testing.assert_allclose(apply(variables, others)[0], full[0], rtol=1e-5, atol=1e-5)
    # ...and depend on the running statistics.
    shifted = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])
    assert not np.allclose(apply({**variables, "batch_stats": shifted}, x), full)


@pytest.mark.parametrize("name", TINY)
def test_train_mode_updates_running_stats_with_torch_momentum(name):
    spec, module, variables = _model(name)
    x = _images(spec.input_shape, batch=4)

    def updated(stats):
        _, new = _apply(module)(
            {**variables, "batch_stats": stats},
            x,
            train=True,
            mutable=("batch_stats",),
            rngs={"dropout": jax.random.key(1)},
        )
        return new["batch_stats"]

    stats_a = variables["batch_stats"]
    stats_b = jax.tree.map(lambda s: s + 1.0, stats_a)
    # new = 0.9 * old + 0.1 * batch statistic, and the batch statistic ignores `old`.
    jax.tree.map(
        lambda a, b, new_a, new_b: np.testing.assert_allclose(new_b - new_a, 0.9 * (b - a), rtol=1e-5),
        stats_a,
        stats_b,
        updated(stats_a),
        updated(stats_b),
    )


def test_dropout_only_in_train_mode():
    spec, module, variables = _model("vgg_tiny")
    x = _images(spec.input_shape)

    def train_logits(seed):
        logits, _ = _apply(module)(
            variables, x, train=True, mutable=("batch_stats",), rngs={"dropout": jax.random.key(seed)}
        )
        return logits

    assert not np.allclose(train_logits(1), train_logits(2))
    np.testing.assert_array_equal(_apply(module)(variables, x), _apply(module)(variables, x))


@pytest.mark.parametrize("name", ["resnet_tiny", "densenet_tiny"])
def test_logits_fn_normalises_inside(name):
    spec, module, variables = _model(name)
    x = _images(spec.input_shape)
    f = jax.jit(models.logits_fn(module, variables, mean=spec.mean, std=spec.std))
    manual = _apply(module)(variables, (x - spec.mean[0]) / spec.std[0])
    np.testing.assert_allclose(f(x), manual, rtol=1e-5, atol=1e-6)
    assert not np.allclose(f(x), _apply(module)(variables, x))


def test_logits_fn_as_jit_argument_compiles_once():
    spec, module, variables = _model("resnet_tiny")
    other = models.init(module, jax.random.key(1), spec.input_shape)
    x = _images(spec.input_shape)
    call = jax.jit(lambda f, images: f(images))
    logits = [call(models.logits_fn(module, v, mean=spec.mean, std=spec.std), x) for v in (variables, other)]
    for v, got in zip((variables, other), logits):
        np.testing.assert_allclose(
            got, _apply(module)(v, (x - spec.mean[0]) / spec.std[0]), rtol=1e-5, atol=1e-6
        )
    assert not np.allclose(logits[0], logits[1])
    assert call._cache_size() == 1  # the weights are traced arguments, not constants


def test_logits_fn_rejects_bad_normalisation():
    _, module, variables = _model("vgg_tiny")
    with pytest.raises(JaxlogitError, match="positive std"):
        models.logits_fn(module, variables, mean=(0.5,), std=(0.0,))


@pytest.mark.parametrize("name", TINY)
def test_checkpoint_round_trip(tmp_path, name):
    spec, module, variables = _model(name)
    models.save_checkpoint(tmp_path / "ckpt", name, variables, {"epochs": 3})
    loaded_module, loaded, meta = models.load_checkpoint(tmp_path / "ckpt")
    assert loaded_module == module
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)
    assert meta["arch"] == name and meta["epochs"] == 3 and meta["num_classes"] == 10
    assert tuple(meta["mean"]) == spec.mean and tuple(meta["std"]) == spec.std
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left


def test_checkpoint_is_replaced_whole(tmp_path):
    spec, module, variables = _model("vgg_tiny")
    other = models.init(module, jax.random.key(5), spec.input_shape)
    models.save_checkpoint(tmp_path / "ckpt", "vgg_tiny", variables, {"run": 1})
    models.save_checkpoint(tmp_path / "ckpt", "vgg_tiny", other, {"run": 2})
    _, loaded, meta = models.load_checkpoint(tmp_path / "ckpt")
    jax.tree.map(np.testing.assert_array_equal, loaded, other)
    assert meta["run"] == 2 and [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_save_rejects_variables_of_another_model(tmp_path):
    _, _, variables = _model("resnet_tiny")
    with pytest.raises(JaxlogitError, match="do not fit model 'densenet_tiny'"):
        models.save_checkpoint(tmp_path / "ckpt", "densenet_tiny", variables, {})
    assert not (tmp_path / "ckpt").exists()


def test_missing_checkpoint_says_how_to_recreate(tmp_path):
    with pytest.raises(JaxlogitError, match=r"no checkpoint in .*nowhere.*jaxlogit convert"):
        models.load_checkpoint(tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["meta", "state"])
def test_corrupt_checkpoint_raises(tmp_path, damage):
    _, _, variables = _model("resnet_tiny")
    directory = models.save_checkpoint(tmp_path / "ckpt", "resnet_tiny", variables, {})
    if damage == "meta":
        (directory / "meta.json").write_text("{not json")
    else:
        for path in (directory / "state").rglob("*"):
            if path.is_file():
                path.write_bytes(b"garbage")
    with pytest.raises(JaxlogitError, match=r"corrupt checkpoint in .*ckpt.*backbone train") as err:
        models.load_checkpoint(directory)
    assert "\n" not in str(err.value)


def test_meta_json_is_plain_json(tmp_path):
    _, _, variables = _model("densenet_tiny")
    directory = models.save_checkpoint(tmp_path / "c", "densenet_tiny", variables, {"acc": 0.9})
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["input_shape"] == [28, 28, 1] and meta["acc"] == 0.9
