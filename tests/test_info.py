"""``jaxlogit info``: the datasets in --data-dir (every layout), converted weights, devices, the cache."""

from __future__ import annotations

import json
import re
import shutil

import jax
import numpy as np
import pytest

from jaxlogit import _digest, data, models
from jaxlogit.cli import main
from jaxlogit.data import testing

WNIDS = data.imagenet_wnids()


def run_info(capsys, *args) -> str:
    try:
        main(["info", *args])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    return capsys.readouterr().out


def section(out: str, title: str) -> list[str]:
    """The indented lines under the line starting with ``title``."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line.strip())
    return block


def pixels(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def image_folders(tmp_path):
    """val: 3 classes x 2 images (+ a text file), train: 2 classes x 3 images, Fashion-MNIST IDX files."""
    root = tmp_path / "folders"
    testing.write_image_folder(root, "val", {w: pixels(2, i) for i, w in enumerate(WNIDS[:3])})
    testing.write_image_folder(root, "train", {w: pixels(3, 10 + i) for i, w in enumerate(WNIDS[3:5])})
    (root / "val" / WNIDS[0] / "README.txt").write_text("not an image")
    for prefix, n in (("train", 7), ("t10k", 4)):
        data.write_idx(root / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), np.uint8))
        data.write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    return root


def test_info_counts_image_folders_and_fashion_mnist_idx(image_folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAXLOGIT_XLA_CACHE", "0")
    out = run_info(capsys, "--data-dir", str(image_folders), "--cache-dir", str(tmp_path / "cache"))
    block = section(out, "data dir:")
    assert block == [
        f"imagenet (image folders): {image_folders}",
        "validation: 6 images, 3 classes",
        "train: 6 images, 2 classes",
        f"fashion_mnist (idx files): {image_folders}",
        "train: 7 images, 10 classes",
        "test: 4 images, 10 classes",
    ], out
    # the counts are what the readers read
    assert len(data.load("imagenet", "val", data_dir=image_folders)) == 6
    assert len(data.load("fashion_mnist", "test", data_dir=image_folders)) == 4


def test_info_reads_a_tfds_imagenet(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAXLOGIT_XLA_CACHE", "0")
    image = testing.encode_image(pixels(1, 0)[0])
    testing.write_tfds_imagenet(
        tmp_path / "tfds",
        {
            "validation": [(image, WNIDS[i], f"v{i}.JPEG") for i in range(5)],
            "train": [(image, WNIDS[0], f"t{i}.JPEG") for i in range(2)],
        },
    )
    out = run_info(capsys, "--data-dir", str(tmp_path / "tfds"), "--cache-dir", str(tmp_path / "cache"))
    block = section(out, "data dir:")
    assert block[0] == f"imagenet (tfds imagenet2012 5.1.0 (array_record)): {tmp_path / 'tfds'}", out
    assert sorted(block[1:3]) == ["train: 2 images, 1000 classes", "validation: 5 images, 1000 classes"]
    assert block[3] == "fashion_mnist: not found here"
    assert len(data.load("imagenet", "validation", data_dir=tmp_path / "tfds")) == 5


def test_info_says_when_a_data_dir_holds_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAXLOGIT_XLA_CACHE", "0")
    out = run_info(capsys, "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert section(out, "data dir:")[0].startswith("no dataset found (expected val/<wnid>/*.JPEG")


def save_tiny(directory, seed: int, **meta):
    module = models.create("resnet_tiny")
    variables = models.init(module, jax.random.key(seed), models.spec("resnet_tiny").input_shape)
    meta = {"source": f"/weights/tiny{seed}.pth", **meta}
    models.save_checkpoint(directory, "resnet_tiny", variables, meta)


def test_info_describes_converted_weights_devices_and_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAXLOGIT_XLA_CACHE", "0")
    weights = tmp_path / "weights"
    save_tiny(weights / "a", 0)
    shutil.copytree(weights / "a", weights / "same")
    save_tiny(weights / "other", 1)
    save_tiny(weights / "recorded", 0, weights_sha256="ab" * 32)
    save_tiny(weights / "legacy", 0)  # written before checkpoints recorded digests
    legacy_meta = json.loads((weights / "legacy" / "meta.json").read_text())
    for key in ("state_sha256", "sha256"):
        del legacy_meta[key]
    (weights / "legacy" / "meta.json").write_text(json.dumps(legacy_meta))
    (weights / "not_a_checkpoint").mkdir()
    cache = tmp_path / "cache"
    (cache / "logits" / "store-1").mkdir(parents=True)
    (cache / "logits" / "store-1" / "shard.npy").write_bytes(b"x" * 2500)
    (cache / "correctors" / "c-1").mkdir(parents=True)

    out = run_info(capsys, "--weights-dir", str(weights), "--cache-dir", str(cache))
    lines = dict(line.split(": ", 1) for line in section(out, "weights dir:"))
    assert set(lines) == {"a", "same", "other", "recorded", "legacy"}, out
    digests = {}
    for name, text in lines.items():
        assert text.startswith("arch resnet_tiny, 10 classes, sha256 "), text
        assert "source /weights/tiny" in text, text
        digests[name] = re.search(r"sha256 ([0-9a-f]{64}) \((\w+)\)", text).groups()
    assert digests["recorded"] == ("ab" * 32, "meta")
    assert digests["a"][1] == digests["other"][1] == "meta"
    assert digests["legacy"] == (_digest.tree_sha256(weights / "legacy" / "state"), "computed")
    assert digests["a"] == digests["same"] and digests["a"][0] != digests["other"][0]

    devices = out.splitlines()[0]
    assert devices.startswith("devices: " + ", ".join(f"{d.platform}:{d.id}" for d in jax.devices()))
    assert f"{jax.device_count()} device(s) in {jax.process_count()} process(es)" in devices
    cache_lines = section(out, "cache:")
    assert "logits: 1, 2.5 kB" in cache_lines and "store-1  2.5 kB" in cache_lines, out
    assert "correctors: 1, 0 B" in cache_lines and "backbones: 0, 0 B" in cache_lines
