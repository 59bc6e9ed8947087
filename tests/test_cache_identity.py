"""Cached artifacts are keyed by what made them: the weights' content and the data's content.

Other weights in a folder of the same name, or other data with the same number of images, never
reuse a logit store, a selected set, a corrector or a trained backbone; the same weights or data
copied to another folder do (keyed by content, not path). Tiny random-init models, tiny data.
"""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from jaxlogit import _digest, data, models, pipeline, training
from jaxlogit.data import testing

ARCH = "resnet_tiny"
ATTACK = pipeline.AttackConfig("pgd", eps=8 / 255, steps=2)
CORRECTOR = pipeline.CorrectorConfig(hidden=16, epochs=1, batch_size=8, lr=1e-3)
N = 24


def random_images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """uint8 random images of ``shape`` from ``jax.random.key(seed)``."""
    return np.asarray(jax.random.randint(jax.random.key(seed), shape, 0, 256), np.uint8)


def save_backbone(directory, variables, meta: dict | None = None) -> training.Backbone:
    """``variables`` of ``ARCH`` as a checkpoint in ``directory``, loaded back."""
    models.save_checkpoint(directory, ARCH, variables, meta)
    return training.load_backbone(directory)


def entries(cache, kind: str) -> list[str]:
    """The artifact folders of ``kind`` under the cache root (locks and temporaries left out)."""
    folder = cache / kind
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if folder.exists()
        else []
    )


def clean_logits(backbone: training.Backbone, split: data.Split) -> np.ndarray:
    """The backbone's logits (N, C) of every image of ``split``."""
    x, _ = split.get_batch(np.arange(len(split)))
    return np.asarray(backbone.logits_fn()(x))


@pytest.fixture(scope="module")
def two_backbones(tmp_path_factory):
    """Backbone A (random init) and B (A with class ``boosted`` always winning), both saved in a
    folder named ``resnet_tiny``, and a split labelled with A's predictions (A is always right)."""
    root = tmp_path_factory.mktemp("weights")
    module = models.create(ARCH)
    variables = models.init(module, jax.random.key(0), models.spec(ARCH).input_shape)
    a = save_backbone(root / "one" / ARCH, variables)
    images = random_images(1, (N, 28, 28, 1))
    unlabelled = data.ArraySplit(images, np.zeros(N, np.int32), data.FASHION_MNIST_CLASS_NAMES)
    predictions = np.argmax(clean_logits(a, unlabelled), -1)
    boosted = int(np.argmin(np.bincount(predictions, minlength=10)))  # a class A predicts least
    bias = variables["params"]["fc"]["bias"].at[boosted].add(100.0)
    b_variables = {
        **variables,
        "params": {**variables["params"], "fc": {**variables["params"]["fc"], "bias": bias}},
    }
    b = save_backbone(root / "two" / ARCH, b_variables)
    split = data.ArraySplit(images, predictions, data.FASHION_MNIST_CLASS_NAMES)
    return a, b, split, boosted


def test_other_weights_in_a_folder_of_the_same_name_never_reuse_an_artifact(two_backbones, tmp_path):
    a, b, split, boosted = two_backbones
    assert a.directory.name == b.directory.name and a.fingerprint != b.fingerprint

    store_a = pipeline.ensure_logits(a, ATTACK, split, "train", cache=tmp_path, progress=False)
    store_b = pipeline.ensure_logits(b, ATTACK, split, "train", cache=tmp_path, progress=False)
    assert store_a.directory != store_b.directory
    np.testing.assert_allclose(
        np.asarray(store_b["clean_logits"]), clean_logits(b, split), rtol=1e-5, atol=1e-4
    )
    assert np.all(np.argmax(np.asarray(store_b["clean_logits"]), -1) == boosted)  # not A's logits

    selected_a = pipeline.selected_indices(a, split, per_class=2, cache=tmp_path)
    selected_b = pipeline.selected_indices(b, split, per_class=2, cache=tmp_path)
    assert len(entries(tmp_path, "selected")) == 2
    np.testing.assert_array_equal(selected_a, data.selected_indices(split.labels, split.labels, 2))
    assert set(split.labels[selected_b]) <= {boosted}  # B is right only where A predicted ``boosted``
    assert len(selected_b) < len(selected_a)

    corrector_a = pipeline.ensure_corrector(store_a, CORRECTOR, cache=tmp_path, progress=False)
    corrector_b = pipeline.ensure_corrector(store_b, CORRECTOR, cache=tmp_path, progress=False)
    assert corrector_a.directory != corrector_b.directory
    assert corrector_b.meta["logits"] == str(store_b.directory)  # trained on B's logits, not A's


def test_the_same_weights_copied_to_another_folder_reuse_every_artifact(two_backbones, tmp_path):
    a, _, split, _ = two_backbones
    store = pipeline.ensure_logits(a, ATTACK, split, "train", cache=tmp_path, progress=False)
    selected = pipeline.selected_indices(a, split, per_class=2, cache=tmp_path)
    corrector = pipeline.ensure_corrector(store, CORRECTOR, cache=tmp_path, progress=False)
    written = (store.directory / "manifest.json").stat().st_mtime_ns

    copy_dir = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(a.directory, copy_dir)
    copy = training.load_backbone(copy_dir)
    assert copy.fingerprint == a.fingerprint

    again = pipeline.ensure_logits(copy, ATTACK, split, "train", cache=tmp_path, progress=False)
    assert again.directory == store.directory
    assert (again.directory / "manifest.json").stat().st_mtime_ns == written  # opened, not rebuilt
    np.testing.assert_array_equal(
        pipeline.selected_indices(copy, split, per_class=2, cache=tmp_path), selected
    )
    assert len(entries(tmp_path, "selected")) == 1
    assert (
        pipeline.corrector_for_attack(
            copy, ATTACK, split, CORRECTOR, limit=None, cache=tmp_path, progress=False
        ).directory
        == corrector.directory
    )


def test_an_array_split_with_one_image_changed_never_reuses_a_store_or_selected_set(two_backbones, tmp_path):
    a, _, split, _ = two_backbones
    images = split.images.copy()
    images[5] = 255 - images[5]
    changed = data.ArraySplit(images, split.labels, split.class_names)
    assert changed.fingerprint != split.fingerprint
    assert (
        data.ArraySplit(split.images.copy(), split.labels, split.class_names).fingerprint == split.fingerprint
    )

    old = pipeline.ensure_logits(a, ATTACK, split, "test", cache=tmp_path, progress=False)
    new = pipeline.ensure_logits(a, ATTACK, changed, "test", cache=tmp_path, progress=False)
    assert new.directory != old.directory
    row = np.asarray(new["clean_logits"])[5]
    np.testing.assert_allclose(row, clean_logits(a, changed)[5], rtol=1e-5, atol=1e-4)
    assert not np.allclose(row, np.asarray(old["clean_logits"])[5])

    pipeline.selected_indices(a, split, per_class=2, cache=tmp_path)
    pipeline.selected_indices(a, changed, per_class=2, cache=tmp_path)
    assert len(entries(tmp_path, "selected")) == 2


def write_fashion_mnist(directory, train: np.ndarray, test: np.ndarray) -> None:
    """IDX files of uint8 images (N, 28, 28) with labels ``i % 10`` in ``directory``."""
    directory.mkdir(parents=True)
    for prefix, images in (("train", train), ("t10k", test)):
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.arange(len(images), dtype=np.uint8) % 10)


def test_a_fashion_mnist_dir_with_one_image_changed_never_reuses_a_store_or_backbone(two_backbones, tmp_path):
    a, _, _, _ = two_backbones
    train, test = random_images(2, (32, 28, 28)), random_images(3, (16, 28, 28))
    write_fashion_mnist(tmp_path / "old", train, test)
    shutil.copytree(tmp_path / "old", tmp_path / "copy")
    train2, test2 = train.copy(), test.copy()
    train2[7], test2[3] = 255 - train[7], 255 - test[3]
    write_fashion_mnist(tmp_path / "new", train2, test2)
    old, copy, new = (data.load_fashion_mnist("test", tmp_path / name) for name in ("old", "copy", "new"))
    assert len(old) == len(new) and old.fingerprint == copy.fingerprint != new.fingerprint

    old_store = pipeline.ensure_logits(a, ATTACK, old, "test", cache=tmp_path, progress=False)
    new_store = pipeline.ensure_logits(a, ATTACK, new, "test", cache=tmp_path, progress=False)
    copy_store = pipeline.ensure_logits(a, ATTACK, copy, "test", cache=tmp_path, progress=False)
    assert new_store.directory != old_store.directory and copy_store.directory == old_store.directory
    row = np.asarray(new_store["clean_logits"])[3]
    np.testing.assert_allclose(row, clean_logits(a, new)[3], rtol=1e-5, atol=1e-4)
    assert not np.allclose(row, np.asarray(old_store["clean_logits"])[3])

    config = training.default_config(ARCH)
    old_dir, copy_dir, new_dir = (
        training.backbone_dir(config, tmp_path, data_dir=tmp_path / name) for name in ("old", "copy", "new")
    )
    assert old_dir == copy_dir != new_dir


def test_an_image_folder_with_one_image_swapped_never_reuses_a_store(tmp_path):
    images = {
        "cats": [random_images(s, (32, 32, 3)) for s in (4, 5)],
        "dogs": [random_images(6, (32, 32, 3))] * 2,
    }
    files = testing.write_image_folder(tmp_path / "old", "val", images)
    shutil.copytree(tmp_path / "old", tmp_path / "copy")
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    swapped = tmp_path / "new" / files[1].relative_to(tmp_path / "old")
    swapped.write_bytes(testing.encode_image(np.zeros((48, 40, 3), np.uint8)))
    assert swapped.stat().st_size != files[1].stat().st_size  # the fingerprint reads sizes, not pixels
    old, copy, new = (data.load("imagenet", "validation", tmp_path / name) for name in ("old", "copy", "new"))
    assert len(old) == len(new) and old.fingerprint == copy.fingerprint != new.fingerprint

    module = models.create(ARCH, num_classes=2)
    variables = models.init(module, jax.random.key(0), (224, 224, 3))
    meta = {"num_classes": 2, "input_shape": [224, 224, 3], "mean": [0.5] * 3, "std": [0.25] * 3}
    backbone = save_backbone(tmp_path / "w" / ARCH, variables, meta)
    stores = [
        pipeline.ensure_logits(
            backbone, ATTACK, split, "validation", batch_size=4, cache=tmp_path, progress=False
        )
        for split in (old, copy, new)
    ]
    assert stores[1].directory == stores[0].directory != stores[2].directory
    row = np.asarray(stores[2]["clean_logits"])[1]
    np.testing.assert_allclose(row, clean_logits(backbone, new)[1], rtol=1e-5, atol=1e-4)
    assert not np.allclose(row, np.asarray(stores[0]["clean_logits"])[1])


def test_a_checkpoint_without_a_recorded_digest_is_keyed_by_its_state_files(two_backbones, tmp_path):
    a, _, _, _ = two_backbones
    legacy = tmp_path / ARCH
    shutil.copytree(a.directory, legacy)
    meta = json.loads((legacy / "meta.json").read_text())
    for key in ("state_sha256", "sha256"):
        del meta[key]
    (legacy / "meta.json").write_text(json.dumps(meta))
    backbone = training.load_backbone(legacy)
    assert backbone.fingerprint == _digest.tree_sha256(legacy / "state") == a.fingerprint


class _ListSplit(data.Split):
    """A split with no fingerprint of its own: the default one reads its images."""

    def __init__(self, images: np.ndarray):
        self._images = images

    @property
    def labels(self):
        return np.zeros(len(self._images), np.int32)

    @property
    def class_names(self):
        return ("a", "b")

    @property
    def image_shape(self):
        return self._images.shape[1:]

    def get_batch(self, indices):
        indices = np.asarray(indices)
        return self._images[indices].astype(np.float32) / 255, self.labels[indices]


def test_the_default_split_fingerprint_changes_with_one_image():
    images = random_images(7, (5, 4, 4, 1))
    changed = images.copy()
    changed[4, 0, 0, 0] ^= 1
    assert _ListSplit(images).fingerprint == _ListSplit(images.copy()).fingerprint
    assert _ListSplit(changed).fingerprint != _ListSplit(images).fingerprint


def test_a_tfds_split_is_keyed_by_version_split_and_record_count(tmp_path):
    pixels = [testing.encode_image(random_images(s, (24, 24, 3))) for s in (8, 9, 10)]
    examples = [(p, data.imagenet_wnids()[i], f"ILSVRC2012_val_{i:08d}.JPEG") for i, p in enumerate(pixels)]
    testing.write_tfds_imagenet(tmp_path / "three", {"validation": examples})
    testing.write_tfds_imagenet(tmp_path / "two", {"validation": examples[:2]})
    shutil.copytree(tmp_path / "three", tmp_path / "copy")
    three, two, copy = (
        data.load("imagenet", "validation", tmp_path / name) for name in ("three", "two", "copy")
    )
    assert three.fingerprint == copy.fingerprint != two.fingerprint
