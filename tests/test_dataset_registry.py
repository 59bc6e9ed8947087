"""The dataset registry: a dataset registered here, in the test only, runs through the CLI and
the pipeline; unknown names are one-line errors everywhere."""

from __future__ import annotations

import dataclasses
import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner

from jaxlogit import data, models, pipeline, training
from jaxlogit.cli import cli, main
from jaxlogit.errors import JaxlogitError

TOY = "toy_stripes"
TOY_SHAPE = (16, 16, 3)
TOY_CLASSES = ("horizontal", "vertical", "diagonal")
TOY_MEAN = (0.3, 0.35, 0.4)
TOY_STD = (0.25, 0.3, 0.2)
N_ATTACKED = 60


@functools.partial(jax.jit, static_argnums=1)
def stripes(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` noisy uint8 images (n, 16, 16, 3) of bright stripes whose direction is the label (n,)."""
    label_key, noise_key = jax.random.split(key)
    labels = jax.random.randint(label_key, (n,), 0, len(TOY_CLASSES))
    rows, cols = jnp.meshgrid(jnp.arange(16), jnp.arange(16), indexing="ij")
    patterns = jnp.stack([(rows % 4 < 2), (cols % 4 < 2), ((rows + cols) % 4 < 2)]).astype(jnp.float32)
    noise = jax.random.uniform(noise_key, (n, *TOY_SHAPE), maxval=0.4)
    images = 0.5 * patterns[labels][..., None] + noise
    return jnp.round(images * 255).astype(jnp.uint8), labels.astype(jnp.int32)


def toy_spec() -> data.DatasetSpec:
    """A 3-class 16x16x3 dataset held in memory: 384 training and 96 test images."""
    splits = {
        name: data.ArraySplit(*map(np.asarray, stripes(jax.random.key(seed), n)), TOY_CLASSES)
        for name, seed, n in (("train", 0, 384), ("test", 1, 96))
    }

    def load(split: str, data_dir=None) -> data.Split:
        if split not in splits:
            raise JaxlogitError(f"unknown {TOY} split {split!r}; use train or test")
        return splits[split]

    return data.DatasetSpec(
        name=TOY,
        loader=load,
        train_split="train",
        eval_split="test",
        image_shape=TOY_SHAPE,
        mean=TOY_MEAN,
        std=TOY_STD,
        num_classes=len(TOY_CLASSES),
        class_names=TOY_CLASSES,
    )


@pytest.fixture(scope="module")
def toy():
    """The toy dataset, registered for this module's tests only."""
    spec = data.register(toy_spec())
    yield spec
    data.unregister(TOY)


@pytest.fixture(scope="module")
def toy_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("toy_cache")


DEFAULT_CONFIG = training.default_config


def small_config(arch: str, **overrides) -> training.BackboneConfig:
    """``training.default_config``, shortened to a few seconds for the toy images."""
    return dataclasses.replace(DEFAULT_CONFIG(arch, **overrides), epochs=4, batch_size=32)


def field(out: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}\s*([0-9.]+)", out, re.MULTILINE)
    assert match, f"no line {label!r} in:\n{out}"
    return float(match.group(1))


def test_registry_lists_gets_and_refuses(toy):
    assert data.names()[:2] == ["fashion_mnist", "imagenet"] and TOY in data.names()
    assert data.get(TOY) is toy
    assert data.load(TOY, "test").image_shape == TOY_SHAPE
    with pytest.raises(JaxlogitError, match="already registered"):
        data.register(toy_spec())
    with pytest.raises(JaxlogitError, match="one per channel"):
        data.register(dataclasses.replace(toy, name="bad", mean=(0.5,)))
    with pytest.raises(JaxlogitError, match="2 class names for 3 classes"):
        data.register(dataclasses.replace(toy, name="bad", class_names=TOY_CLASSES[:2]))
    assert "bad" not in data.names()


def test_unknown_dataset_is_one_line_listing_the_names(toy):
    with pytest.raises(JaxlogitError) as err:
        data.load("nope", "train")
    message = str(err.value)
    assert "\n" not in message and "'nope'" in message
    for name in ("fashion_mnist", "imagenet", TOY):
        assert name in message


def test_builtin_specs_match_what_their_loaders_and_models_use():
    fashion, imagenet = data.get(data.DEFAULT_DATASET), data.get("imagenet")
    assert (fashion.train_split, fashion.eval_split) == ("train", "test")
    assert (imagenet.train_split, imagenet.eval_split) == ("train", "validation")
    assert fashion.classes() == data.FASHION_MNIST_CLASS_NAMES
    assert imagenet.classes() == data.imagenet_class_names() and imagenet.num_classes == 1000
    for name, dataset in (("resnet_compact", fashion), ("resnet50", imagenet)):
        spec = models.spec(name)
        assert spec == models.spec(name, dataset=dataset.name)
        assert (spec.input_shape, spec.num_classes, spec.mean, spec.std) == (
            dataset.image_shape,
            dataset.num_classes,
            dataset.mean,
            dataset.std,
        )
    assert training.BackboneConfig("resnet_compact").dataset == data.DEFAULT_DATASET


def test_compact_models_take_the_shape_and_classes_of_a_registered_dataset(toy):
    spec = models.spec("resnet_compact", dataset=TOY)
    assert (spec.input_shape, spec.num_classes, spec.mean, spec.std) == (TOY_SHAPE, 3, TOY_MEAN, TOY_STD)
    assert set(models.names(dataset=TOY)) == {"vgg_compact", "resnet_compact", "densenet_compact"}
    expected = f"'resnet50' does not take {TOY} images: choose one of vgg_compact"
    with pytest.raises(JaxlogitError, match=expected):
        models.spec("resnet50", dataset=TOY)


@pytest.mark.slow
def test_attack_cli_trains_and_attacks_on_a_registered_dataset(toy, toy_cache, monkeypatch):
    monkeypatch.setattr(training, "default_config", small_config)
    args = [
        "attack",
        "--dataset",
        TOY,
        "--arch",
        "resnet_compact",
        "--attack",
        "pgd",
        "--n",
        str(N_ATTACKED),
        "--batch",
        str(N_ATTACKED),
        "--cache-dir",
        str(toy_cache),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = small_config("resnet_compact", dataset=TOY)
    meta = json.loads((training.backbone_dir(config, str(toy_cache)) / "meta.json").read_text())
    assert (meta["dataset"], meta["num_classes"], meta["input_shape"]) == (TOY, 3, list(TOY_SHAPE))
    assert (tuple(meta["mean"]), tuple(meta["std"])) == (TOY_MEAN, TOY_STD)
    backbone = training.load_backbone(training.backbone_dir(config, str(toy_cache)))
    x, y = toy.load("test").get_batch(np.arange(N_ATTACKED))
    clean = float(np.mean(np.asarray(backbone.logits_fn()(x)).argmax(-1) == y))
    assert field(result.output, "clean accuracy:") == pytest.approx(clean, abs=1e-4)
    assert clean > 0.6  # learnt the stripes from the registered training split (chance: 1/3)
    adversarial = field(result.output, "adversarial accuracy:")
    success = field(result.output, "success rate:")
    assert adversarial + success == pytest.approx(1.0, abs=2e-4)  # success == adversarial logits misclassify


@pytest.mark.slow
def test_ensure_logits_on_a_registered_dataset(toy, toy_cache):
    backbone = training.ensure_backbone(
        small_config("resnet_compact", dataset=TOY), cache=str(toy_cache), progress=False
    )
    split = toy.load(toy.eval_split)
    logit_store = pipeline.ensure_logits(
        backbone,
        pipeline.AttackConfig("pgd"),
        split,
        toy.eval_split,
        limit=50,
        batch_size=50,
        cache=str(toy_cache),
        progress=False,
    )
    clean, adv = np.asarray(logit_store["clean_logits"]), np.asarray(logit_store["adv_logits"])
    labels = np.asarray(logit_store["labels"])
    assert clean.shape == adv.shape == (50, toy.num_classes)
    np.testing.assert_array_equal(labels, split.labels[:50])
    np.testing.assert_array_equal(np.asarray(logit_store["success"]), adv.argmax(-1) != labels)
    x, _ = split.get_batch(np.arange(50))
    np.testing.assert_allclose(clean, np.asarray(backbone.logits_fn()(x)), atol=1e-4)


def test_cli_rejects_an_unknown_dataset_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["attack", "--dataset", "nope", "--arch", "resnet_compact", "--attack", "pgd"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1
    assert lines[0].startswith("error: ") and "'nope'" in lines[0] and "fashion_mnist" in lines[0]


def test_cli_rejects_a_split_the_dataset_lacks(toy, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "logits",
                "--dataset",
                TOY,
                "--arch",
                "resnet_compact",
                "--attack",
                "pgd",
                "--split",
                "validation",
            ]
        )
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and "train, test" in lines[0]


def test_cli_on_a_dataset_without_compact_backbones_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["attack", "--dataset", "imagenet", "--arch", "resnet_compact", "--attack", "pgd"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and "--weights-dir" in lines[0]


def test_experiment_rejects_an_unknown_dataset_in_one_line(capsys):
    from experiments import table1

    with pytest.raises(SystemExit) as exit_:
        table1.main(["--dataset", "nope"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1 and "'nope'" in lines[0] and "imagenet" in lines[0]
