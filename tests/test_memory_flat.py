"""Memory flat in the data size: stores are read by rows, the corrector trains from the shards,
and a verified store is not hashed again."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re

import jax
import numpy as np
import pytest

from jaxlogit import corrector, data, paths, pipeline, store, training
from jaxlogit.cli import _correct, main
from jaxlogit.errors import JaxlogitError
from jaxlogit.store import _layout, _reader

C = 6


def produce(start: int, stop: int) -> dict:
    """Deterministic rows ``[start, stop)``: clean logits peak at the label, adversarial ones next to it."""
    rng = np.random.default_rng(start)
    n = stop - start
    labels = rng.integers(0, C, n).astype(np.int32)
    clean = (3.0 * np.eye(C)[labels] + rng.normal(size=(n, C))).astype(np.float32)
    adv = (np.roll(clean, 1, axis=1) + 0.5 * rng.normal(size=(n, C))).astype(np.float32)
    return {
        "clean_logits": clean,
        "adv_logits": adv,
        "labels": labels,
        "success": rng.random(n) < 0.8,
        "norm": rng.random(n).astype(np.float32),
    }


def build(directory: pathlib.Path, num_items: int = 301, shard_size: int = 23) -> store.LogitStore:
    return store.build(directory, num_items, produce, shard_size=shard_size, config={"c": C}, progress=False)


def refuse_whole_arrays(monkeypatch) -> None:
    """From now on every array of a store counts as large, and reading one whole (``store[key]``: its
    shards concatenated) fails."""

    def refuse(self, key):
        raise AssertionError(f"read the whole array {key!r} of a store")

    monkeypatch.setattr(_reader, "SMALL_ARRAY_BYTES", 0)
    monkeypatch.setattr(store.LogitStore, "__getitem__", refuse)


@pytest.mark.parametrize("small_bytes", [store.SMALL_ARRAY_BYTES, 0], ids=["read-whole", "read-by-rows"])
def test_rows_gather_what_the_whole_array_holds(tmp_path, monkeypatch, small_bytes):
    monkeypatch.setattr(_reader, "SMALL_ARRAY_BYTES", small_bytes)
    opened = build(tmp_path / "s")
    rng = np.random.default_rng(0)
    picks = [
        rng.integers(0, 301, 97),  # random, with repeats, across shards
        np.arange(20, 50),  # consecutive, across a shard boundary (23, 46)
        np.array([300, 0, 22, 23, 23]),  # the ends, a boundary, a repeat
        np.array([], np.int64),
    ]
    for key in opened.keys():
        whole = opened[key]
        assert opened.shape(key) == whole.shape and opened.dtype(key) == whole.dtype
        for indices in picks:
            got = opened.rows(key, indices)
            assert got.dtype == whole.dtype and got.shape == (len(indices), *whole.shape[1:])
            np.testing.assert_array_equal(got, whole[indices])
    for bad in (np.array([301]), np.array([-1]), np.array([0.5])):
        with pytest.raises(IndexError):
            opened.rows("labels", bad)


def test_a_corrector_trained_from_a_store_equals_one_trained_from_arrays(tmp_path, monkeypatch):
    opened = build(tmp_path / "s")
    arrays = {key: np.array(opened[key]) for key in opened.keys()}
    settings = dict(
        num_classes=C, hidden=16, epochs=3, batch_size=16, lr=3e-3, key=jax.random.key(1), progress=False
    )
    from_arrays = corrector.train(arrays, **settings)
    refuse_whole_arrays(monkeypatch)
    from_store = corrector.train(opened, **settings)
    for field in ("params", "last_params", "losses", "clean_fractions", "holdout_accuracy"):
        a, b = jax.tree.leaves(getattr(from_arrays, field)), jax.tree.leaves(getattr(from_store, field))
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b)), field
    assert from_store.best_epoch == from_arrays.best_epoch
    np.testing.assert_array_equal(from_store.holdout_indices, from_arrays.holdout_indices)
    assert not np.isnan(from_store.holdout_accuracy).any()


def test_a_store_with_a_nan_logit_in_a_late_shard_is_refused(tmp_path):
    def with_nan(start, stop):
        rows = produce(start, stop)
        if start <= 250 < stop:
            rows["adv_logits"][250 - start, 2] = np.nan
        return rows

    opened = store.build(tmp_path / "s", 301, with_nan, shard_size=23, config={}, progress=False)
    with pytest.raises(JaxlogitError, match="adv_logits contains NaN"):
        corrector.train(opened, num_classes=C, hidden=4, epochs=1, batch_size=16, key=jax.random.key(0))


def test_the_pipeline_trains_a_corrector_without_reading_a_whole_array(tmp_path, monkeypatch):
    opened = build(tmp_path / "logits" / "toy-pgd-train-0123")
    refuse_whole_arrays(monkeypatch)
    config = pipeline.CorrectorConfig(hidden=8, epochs=1, batch_size=16, lr=1e-3)
    trained = pipeline.ensure_corrector(opened, config, cache=tmp_path, progress=False)
    assert trained.meta["best_epoch"] == 1 and trained.module.num_classes == C


def test_selected_logits_slice_a_cached_store_by_rows(tmp_path, monkeypatch):
    opened = build(tmp_path / "s")
    refuse_whole_arrays(monkeypatch)
    monkeypatch.setattr(pipeline, "store_dir", lambda *args, **kwargs: opened.directory)
    indices = np.array([5, 300, 24, 24, 0])
    rows = pipeline.selected_logits(None, None, None, "test", indices, cache=tmp_path)
    assert set(rows) == set(opened.keys())
    for key, value in rows.items():
        np.testing.assert_array_equal(value, opened.rows(key, indices))


def printed(out: str, label: str) -> list[float]:
    """The numbers on the line of ``out`` that starts with ``label``, their intervals left out."""
    line = next(line for line in out.splitlines() if line.startswith(label))
    return [float(v) for v in re.findall(r"\d+\.\d+", re.sub(r"\[.*?\]", "", line[len(label) :]))]


def test_the_logits_and_correct_eval_commands_read_a_chunk_at_a_time(tmp_path, monkeypatch, capsys):
    opened = build(tmp_path / "s")
    whole = {key: np.array(opened[key]) for key in opened.keys()}
    module = corrector.Corrector(num_classes=C, hidden=None)
    params = corrector.init_params(module, key=jax.random.key(0))
    trained = pipeline.TrainedCorrector(module, params, {}, tmp_path)
    monkeypatch.setattr(_correct, "_store", lambda **options: opened)
    monkeypatch.setattr(pipeline, "ensure_corrector", lambda *args, **kwargs: trained)
    monkeypatch.setattr(_correct, "_CHUNK_ROWS", 40)  # 301 rows: 8 chunks
    refuse_whole_arrays(monkeypatch)
    main(["logits", "--arch", "resnet_compact", "--attack", "pgd", "--split", "train"])
    logits_out = capsys.readouterr().out
    main(["correct", "eval", "--arch", "resnet_compact", "--attack", "pgd"])
    eval_out = capsys.readouterr().out

    def accuracy(predicted) -> float:
        return round(float(np.mean(predicted == whole["labels"])), 4)

    assert printed(logits_out, "clean accuracy:") == [accuracy(whole["clean_logits"].argmax(-1))]
    assert printed(logits_out, "adversarial accuracy:") == [accuracy(whole["adv_logits"].argmax(-1))]
    assert printed(logits_out, "success rate:") == [round(float(np.mean(whole["success"])), 4)]
    for kind in ("clean", "adv"):
        z = whole[f"{kind}_logits"]
        expected = [accuracy(z.argmax(-1)), accuracy(trained.predict_classes(z))]
        assert printed(eval_out, f"{kind:5s} accuracy:") == expected


# Verification: once per process, again when a file changes.


@pytest.fixture
def hashes(monkeypatch) -> list[str]:
    """Names of the files the store hashes from now on (the record of earlier checks forgotten)."""
    seen: list[str] = []
    real = _layout._digest.file_sha256
    monkeypatch.setattr(_layout, "_VERIFIED", {})
    monkeypatch.setattr(
        _layout._digest, "file_sha256", lambda path: seen.append(pathlib.Path(path).name) or real(path)
    )
    return seen


def read_everything(directory: pathlib.Path) -> None:
    """Opens the store as ``ensure_logits`` does (``build`` of a complete store) and reads every row."""
    opened = build(directory)
    for key in opened.keys():
        opened.rows(key, np.arange(len(opened)))


def test_a_verified_store_is_not_hashed_again(tmp_path, monkeypatch, hashes):
    monkeypatch.setattr(_layout, "_RACY_NS", 0)  # files written just now count as settled
    build(tmp_path / "s")
    hashes.clear()
    read_everything(tmp_path / "s")
    assert len(hashes) == len(set(hashes)) == 14 * 5  # every shard file, once
    hashes.clear()
    read_everything(tmp_path / "s")
    assert hashes == []


def test_a_shard_changed_after_its_check_is_hashed_again_and_refused(tmp_path, monkeypatch, hashes):
    monkeypatch.setattr(_layout, "_RACY_NS", 0)
    build(tmp_path / "s")
    read_everything(tmp_path / "s")
    shard = tmp_path / "s" / "shard-00003.adv_logits.npy"
    before = shard.stat()
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # same size, and the modification time put back: only the change time tells
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    hashes.clear()
    with pytest.raises(store.DamagedStore, match="shard-00003.adv_logits.npy is damaged"):
        store.open(tmp_path / "s").rows("adv_logits", np.arange(301))
    assert hashes == [shard.name]


def test_files_modified_just_before_their_check_are_hashed_at_every_open(tmp_path, monkeypatch, hashes):
    monkeypatch.setattr(_layout, "_RACY_NS", 3600 * 10**9)  # timestamps too coarse to tell a change
    build(tmp_path / "s")
    hashes.clear()
    read_everything(tmp_path / "s")
    first = len(hashes)
    read_everything(tmp_path / "s")
    assert first == 14 * 5 and len(hashes) == 2 * first


# A cached backbone is found without loading its training split.


def write_idx_dataset(directory: pathlib.Path, seed: int) -> None:
    """Fashion-MNIST IDX files of 20 training and 10 test random images in ``directory``."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", 20), ("t10k", 10)):
        data.write_idx(directory / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8))
        data.write_idx(directory / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)


def test_the_backbone_folder_is_found_without_loading_the_training_split_again(tmp_path, monkeypatch):
    from jaxlogit.data import _fashion_mnist, _fingerprint

    loads = []
    read = _fashion_mnist._read_split.__wrapped__  # not the per-process cache: every load counts
    monkeypatch.setattr(_fashion_mnist, "_read_split", lambda *args: loads.append(args) or read(*args))
    monkeypatch.setattr(_fingerprint, "_RACY_NS", 0)  # files written just now count as settled
    write_idx_dataset(tmp_path / "fm", seed=0)
    config = training.default_config("resnet_compact")

    def loaded_key() -> pathlib.Path:  # the folder as the split's own fingerprint names it
        split = data.load("fashion_mnist", "train", tmp_path / "fm")
        key = {**dataclasses.asdict(config), "train_data": split.fingerprint}
        return paths.artifact_dir("backbones", config.arch, key, tmp_path)

    first = training.backbone_dir(config, tmp_path, data_dir=tmp_path / "fm")
    assert len(loads) == 1
    assert training.backbone_dir(config, tmp_path, data_dir=tmp_path / "fm") == first and len(loads) == 1
    assert first == loaded_key()

    images = tmp_path / "fm" / "train-images-idx3-ubyte"
    before = images.stat()
    changed = bytearray(images.read_bytes())
    changed[-1] ^= 1  # one pixel; same size, the modification time put back
    images.write_bytes(bytes(changed))
    os.utime(images, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = training.backbone_dir(config, tmp_path, data_dir=tmp_path / "fm")
    assert again != first and again == loaded_key()
