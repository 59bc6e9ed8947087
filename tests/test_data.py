"""Tests of jaxlogit.data: IDX files, Fashion-MNIST search, ImageNet layouts, selection, names."""

from __future__ import annotations

import gzip
import logging
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxlogit import data
from jaxlogit.data import _fashion_mnist, _imagenet, testing
from jaxlogit.errors import JaxlogitError

SYSTEM_FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
WNIDS = ("n01440764", "n01443537", "n15075141")  # standard indices 0, 1, 999


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No user data dirs leak in; caches go to a temporary folder."""
    monkeypatch.delenv("JAXLOGIT_DATA", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("tfds_default")))
    monkeypatch.setenv("JAXLOGIT_CACHE", str(tmp_path_factory.mktemp("cache")))


def _random_uint8(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write_fashion_idx(directory: pathlib.Path, n_train=12, n_test=5, gz=True, seed=0):
    """Four IDX files with random images and labels; returns {split: (images, labels)}."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = _random_uint8((n, 28, 28), seed)
        labels = np.arange(n, dtype=np.uint8) % 10
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[split] = (images, labels)
    return arrays


# ---------------------------------------------------------------- IDX files


@pytest.mark.parametrize("name", ["x-idx3-ubyte.gz", "x-idx3-ubyte"])
def test_idx_round_trip(tmp_path, name):
    images = _random_uint8((7, 5, 3), seed=1)
    data.write_idx(tmp_path / name, images)
    back = data.read_idx(tmp_path / name, ndim=3)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, images)
    with (gzip.open if name.endswith(".gz") else open)(tmp_path / name, "rb") as handle:
        raw = handle.read()
    assert raw[:4] == b"\x00\x00\x08\x03"


def test_idx_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    data.write_idx(path, np.arange(4, dtype=np.uint8))
    with pytest.raises(JaxlogitError, match="magic number 0x00000801, expected 0x00000803") as info:
        data.read_idx(path, ndim=3)
    assert str(path) in str(info.value)


def test_idx_truncated_and_corrupt_gzip(tmp_path):
    path = tmp_path / "t-idx3-ubyte"
    data.write_idx(path, _random_uint8((3, 4, 4), seed=2))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(JaxlogitError, match="truncated"):
        data.read_idx(path, ndim=3)
    bad_gz = tmp_path / "t-idx3-ubyte.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(JaxlogitError, match=str(bad_gz)):
        data.read_idx(bad_gz, ndim=3)


# ---------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_dir(tmp_path, gz):
    arrays = _write_fashion_idx(tmp_path / "fm", gz=gz)
    assert data.find_fashion_mnist(tmp_path / "fm") == tmp_path / "fm"
    split = data.load("fashion_mnist", "test", data_dir=tmp_path / "fm")
    images, labels = arrays["test"]
    assert len(split) == 5 and split.image_shape == (28, 28, 1) and split.num_classes == 10
    assert split.class_names[0] == "T-shirt/top" and split.class_names[9] == "Ankle boot"
    np.testing.assert_array_equal(split.images[..., 0], images)
    x, y = split.get_batch([4, 1])
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_allclose(x[..., 0], images[[4, 1]] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y, labels[[4, 1]])


def test_fashion_mnist_search_order(tmp_path, monkeypatch):
    system, env = tmp_path / "system", tmp_path / "env"
    _write_fashion_idx(system, seed=1)
    _write_fashion_idx(env / "fashion-mnist", seed=2)
    monkeypatch.setattr(_fashion_mnist, "SYSTEM_DIR", system)
    assert data.find_fashion_mnist() == system
    monkeypatch.setenv("JAXLOGIT_DATA", str(env))
    assert data.find_fashion_mnist() == env / "fashion-mnist"
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    assert data.find_fashion_mnist(explicit) is None  # an explicit dir is the only place looked at
    with pytest.raises(JaxlogitError, match=f"not found in {explicit}"):
        data.load("fashion_mnist", "train", data_dir=explicit)


def test_fashion_mnist_from_default_tfds_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(_fashion_mnist, "SYSTEM_DIR", tmp_path / "absent")
    images = _random_uint8((6, 28, 28), seed=3)
    labels = np.array([3, 0, 9, 3, 1, 7])
    tfds_dir = tmp_path / "tfds"
    testing.write_tfds_fashion_mnist(tfds_dir, {"train": (images, labels), "test": (images[:2], labels[:2])})
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    assert data.find_fashion_mnist() == tfds_dir
    split = data.load("fashion_mnist", "train")
    assert split.images.shape == (6, 28, 28, 1) and split.labels.dtype == np.int32
    for image, label in zip(split.images[..., 0], split.labels):  # TFDS stores its own order
        (match,) = np.flatnonzero((images == image).all(axis=(1, 2)))
        assert label == labels[match]
    assert sorted(split.labels) == sorted(labels)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(_fashion_mnist, "SYSTEM_DIR", tmp_path / "absent")
    assert data.find_fashion_mnist() is None
    with pytest.raises(JaxlogitError, match="apt-get install -y dataset-fashion-mnist") as info:
        data.load("fashion_mnist", "train")
    assert "\n" not in str(info.value) and "--data-dir" in str(info.value)


def test_real_fashion_mnist():
    if os.environ.get("CI"):
        assert SYSTEM_FASHION_MNIST.is_dir(), "CI must install dataset-fashion-mnist"
    elif not SYSTEM_FASHION_MNIST.is_dir():
        pytest.skip("dataset-fashion-mnist is not installed")
    assert data.find_fashion_mnist() == SYSTEM_FASHION_MNIST
    for split, n in (("train", 60_000), ("test", 10_000)):
        s = data.load("fashion_mnist", split)
        assert s.images.shape == (n, 28, 28, 1) and s.images.dtype == np.uint8
        np.testing.assert_array_equal(np.bincount(s.labels, minlength=10), [n // 10] * 10)
        assert data.load("fashion_mnist", split).images is s.images  # decoded once per process
    assert not s.images.flags.writeable


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(JaxlogitError, match="fashion_mnist, imagenet"):
        data.load("cifar10", "train")
    with pytest.raises(JaxlogitError, match="train, test"):
        data.load("fashion_mnist", "validation")
    with pytest.raises(JaxlogitError, match="validation, train"):
        data.load("imagenet", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- ArraySplit


def test_array_split_batches_cover_the_range():
    images = _random_uint8((11, 4, 3, 2), seed=4)
    split = data.ArraySplit(images, np.arange(11) % 3, ["a", "b", "c"])
    assert (len(split), split.num_classes, split.image_shape) == (11, 3, (4, 3, 2))
    got = list(split.batches(4, start=2, stop=10))
    assert [first for first, _, _ in got] == [2, 6]
    assert [x.shape[0] for _, x, _ in got] == [4, 4]
    x_all, y_all = split.get_batch(np.arange(2, 10))
    np.testing.assert_array_equal(np.concatenate([x for _, x, _ in got]), x_all)
    np.testing.assert_array_equal(np.concatenate([y for _, _, y in got]), y_all)
    assert [x.shape[0] for _, x, _ in split.batches(5)] == [5, 5, 1]
    with pytest.raises(ValueError):
        data.ArraySplit(images.astype(np.float32), np.zeros(11), ["a"])


# ---------------------------------------------------------------- ImageNet


def _torchvision_eval(path_or_image):
    from torchvision import transforms

    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    tensor = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])(
        image.convert("RGB")
    )
    return tensor.permute(1, 2, 0).numpy()


@pytest.fixture
def image_folder(tmp_path):
    """val/<wnid>/ with odd sizes, one grey and one CMYK JPEG."""
    root = tmp_path / "imagenet"
    testing.write_image_folder(
        root,
        "val",
        {
            WNIDS[2]: [_random_uint8((300, 257, 3), 5), _random_uint8((100, 150), 6)],  # grey, upscaled
            WNIDS[0]: [_random_uint8((231, 500, 3), 7)],
            WNIDS[1]: [_random_uint8((256, 256, 3), 8)],
        },
    )
    cmyk = Image.fromarray(_random_uint8((260, 240, 4), 9), mode="CMYK")
    cmyk.save(root / "val" / WNIDS[1] / "z_cmyk.JPEG")
    (root / "val" / WNIDS[1] / "notes.txt").write_text("not an image")
    return root


def test_image_folder_matches_torchvision(image_folder):
    from torchvision.datasets import ImageFolder

    split = data.load("imagenet", "validation", data_dir=image_folder)
    reference = ImageFolder(image_folder / "val")
    assert list(split.paths) == [path for path, _ in reference.samples]
    ref_wnids = [reference.classes[target] for _, target in reference.samples]
    np.testing.assert_array_equal(split.labels, [data.imagenet_wnids().index(w) for w in ref_wnids])
    np.testing.assert_array_equal(split.labels, [0, 1, 1, 999, 999])
    assert split.num_classes == 1000 and split.class_names[999] == "toilet tissue"
    x, y = split.get_batch(np.arange(len(split)))
    assert x.shape == (5, 224, 224, 3) and x.dtype == np.float32 and split.image_shape == (224, 224, 3)
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(y, split.labels)
    expected = np.stack([_torchvision_eval(path) for path in split.paths])
    np.testing.assert_allclose(x, expected, atol=1e-6)
    grey = x[split.paths.index(str(image_folder / "val" / WNIDS[2] / f"{WNIDS[2]}_0001.JPEG"))]
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_image_folder_with_other_class_names(tmp_path):
    images = {"dog": [_random_uint8((230, 240, 3), 1)], "cat": [_random_uint8((240, 230, 3), 2)]}
    testing.write_image_folder(tmp_path, "train", images)
    split = data.load("imagenet", "train", data_dir=tmp_path)
    assert split.class_names == ("cat", "dog") and split.num_classes == 2
    np.testing.assert_array_equal(split.labels, [0, 1])


def test_imagenet_layout_errors(tmp_path):
    for missing in (None, ""):
        with pytest.raises(JaxlogitError, match=r"val/<wnid>/\*\.JPEG") as info:
            data.load("imagenet", "validation", data_dir=missing)
        assert "\n" not in str(info.value)
    with pytest.raises(JaxlogitError, match=r"no ImageNet validation split found .*val/<wnid>"):
        data.load("imagenet", "validation", data_dir=tmp_path)
    (tmp_path / "ILSVRC2012_img_val.tar").write_bytes(b"")
    with pytest.raises(JaxlogitError, match="tfds build imagenet2012"):
        data.load("imagenet", "val", data_dir=tmp_path)
    fake = tmp_path / "tfrec" / "imagenet2012" / "5.1.0"
    fake.mkdir(parents=True)
    (fake / "dataset_info.json").write_text('{"name": "imagenet2012"}')
    with pytest.raises(JaxlogitError, match="--file_format=array_record"):
        data.load("imagenet", "validation", data_dir=tmp_path / "tfrec")


@pytest.fixture
def tfds_imagenet(tmp_path):
    """A prepared imagenet2012 whose 3 validation images each have their own wnid."""
    pixels = {WNIDS[0]: _random_uint8((300, 257, 3), 11), WNIDS[1]: _random_uint8((120, 90, 3), 12)}
    pixels[WNIDS[2]] = _random_uint8((240, 333), 13)  # grey
    encoded = {wnid: testing.encode_image(p) for wnid, p in pixels.items()}
    examples = [(encoded[w], w, f"ILSVRC2012_val_{i:08d}.JPEG") for i, w in enumerate(WNIDS)]
    testing.write_tfds_imagenet(tmp_path / "tfds", {"validation": examples})
    return tmp_path / "tfds", encoded


def test_tfds_imagenet_reads_a_prepared_dataset(tfds_imagenet, monkeypatch):
    import io

    data_dir, encoded = tfds_imagenet
    split = data.load("imagenet", "validation", data_dir=data_dir)
    assert isinstance(split, data.TfdsImageSplit) and len(split) == 3 and split.num_classes == 1000
    assert sorted(split.labels) == [0, 1, 999]
    x, y = split.get_batch([2, 0, 1])
    np.testing.assert_array_equal(y, split.labels[[2, 0, 1]])
    assert x.shape == (3, 224, 224, 3) and 0.0 <= x.min() and x.max() <= 1.0
    for image, label in zip(x, y):
        wnid = data.imagenet_wnids()[label]
        np.testing.assert_allclose(image, _torchvision_eval(Image.open(io.BytesIO(encoded[wnid]))), atol=1e-6)
    # the labels were cached on disk: a new split reads them without a pass over the records
    monkeypatch.setattr(_imagenet.TfdsImageSplit, "_read_labels", lambda self: pytest.fail("labels re-read"))
    again = data.load("imagenet", "val", data_dir=data_dir / "imagenet2012")
    np.testing.assert_array_equal(again.labels, split.labels)
    with pytest.raises(JaxlogitError, match="split 'train'"):
        data.load("imagenet", "train", data_dir=data_dir)


# ---------------------------------------------------------------- selection and names


def _selected_by_loop(predictions, labels, per_class):
    taken = {}
    for i, (p, t) in enumerate(zip(predictions, labels)):
        if p == t and taken.get(t, 0) < per_class:
            taken[t] = taken.get(t, 0) + 1
            yield i


def test_selected_indices_first_correct_per_class():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    predictions = np.where(rng.random(2000) < 0.7, labels, rng.integers(0, 10, 2000))
    chosen = data.selected_indices(predictions, labels, per_class=100)
    np.testing.assert_array_equal(chosen, list(_selected_by_loop(predictions, labels, 100)))
    assert np.all(np.diff(chosen) > 0) and np.all(predictions[chosen] == labels[chosen])
    np.testing.assert_array_equal(np.bincount(labels[chosen], minlength=10), [100] * 10)
    logits = np.eye(10)[predictions] + rng.random((2000, 10)) * 0.1
    np.testing.assert_array_equal(data.selected_indices(logits, labels, 100), chosen)
    np.testing.assert_array_equal(data.selected_indices(predictions, labels, 100), chosen)


def test_selected_indices_short_classes_are_reported(caplog):
    labels = np.array([0, 0, 1, 1, 2, 2, 0])
    predictions = np.array([0, 0, 1, 0, 0, 0, 0])  # class 1: one correct, class 2: none
    with caplog.at_level(logging.WARNING):
        chosen = data.selected_indices(predictions, labels, per_class=2, num_classes=4)
    np.testing.assert_array_equal(chosen, [0, 1, 2])
    assert "3 of 4 classes have fewer than 2" in caplog.text and "selected 3 instead of 8" in caplog.text


def test_imagenet_class_names_and_wnids():
    from tensorflow_datasets.datasets.imagenet2012 import imagenet_common

    names = data.imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[640] == "manhole cover" and names[0] == "tench"
    wnids = data.imagenet_wnids()
    assert list(wnids) == sorted(wnids) and len(set(wnids)) == 1000
    assert list(wnids) == pathlib.Path(imagenet_common.label_names_file()).read_text().split()
