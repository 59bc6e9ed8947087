"""Reliability: nothing of the user's is destroyed, damage is detected, faults are one line."""

from __future__ import annotations

import errno
import json
import os
import pathlib

import jax
import numpy as np
import pytest

from jaxlogit import _digest, _lock, models, paths, pipeline, store, training
from jaxlogit.cli import _info, main
from jaxlogit.errors import JaxlogitError

ARCH = "resnet_compact"


def run_main(capsys, *args) -> tuple[int, str, str]:
    """Runs the CLI in this process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *words: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def random_variables(seed: int) -> dict:
    module = models.create(ARCH)
    return models.init(module, jax.random.key(seed), models.spec(ARCH).input_shape)


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture
def fake_weights(monkeypatch, tmp_path):
    """`convert` without torch: the state_dict reader and importer give random compact weights."""
    variables = random_variables(1)
    monkeypatch.setattr(_info, "_load_state_dict", lambda weights: {})
    monkeypatch.setattr(models, "from_torchvision", lambda arch, state: variables)
    return variables


# 1. convert --out never deletes what it did not write -------------------------------------------------------------

def test_convert_refuses_the_current_folder_and_keeps_its_files(capsys, tmp_path, monkeypatch, fake_weights):
    (tmp_path / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", ".", "--force")
    assert_one_line(code, err, "not empty", "new or empty folder")
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_convert_refuses_a_file(capsys, tmp_path, fake_weights):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, _, err = run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", str(target), "--force")
    assert_one_line(code, err, "is a file")
    assert target.read_text() == "keep me"


def test_convert_replaces_a_checkpoint_of_the_same_arch_only_with_force(capsys, tmp_path, fake_weights):
    target = tmp_path / "ckpt"
    models.save_checkpoint(target, ARCH, random_variables(0))
    code, _, err = run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", str(target))
    assert_one_line(code, err, "--force")
    assert leaves_equal(models.load_checkpoint(target)[1], random_variables(0))
    code, out, err = run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", str(target), "--force")
    assert code == 0, err
    assert leaves_equal(models.load_checkpoint(target)[1], fake_weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old folder left


def test_convert_never_replaces_another_arch(capsys, tmp_path, fake_weights):
    target = tmp_path / "ckpt"
    models.save_checkpoint(target, "vgg_compact", models.init(models.create("vgg_compact"), jax.random.key(0),
                                                               models.spec("vgg_compact").input_shape))
    code, _, err = run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", str(target), "--force")
    assert_one_line(code, err, "vgg_compact")
    assert models.load_checkpoint(target)[2]["arch"] == "vgg_compact"


def test_convert_into_an_empty_folder_writes_the_checkpoint(capsys, tmp_path, fake_weights):
    target = tmp_path / "empty"
    target.mkdir()
    code, _, err = run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", str(target))
    assert code == 0, err
    assert leaves_equal(models.load_checkpoint(target)[1], fake_weights)


def test_convert_into_a_read_only_folder_fails_at_once(capsys, tmp_path, monkeypatch, fake_weights):
    parent = tmp_path / "ro"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if pathlib.Path(p) == parent else real_access(p, mode))
    code, _, err = run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", str(parent / "ckpt"))
    assert_one_line(code, err, "read-only", str(parent))
    assert list(parent.iterdir()) == []


# 3. checksums: damage is an error naming the file, and the builder repairs it -----------------------------------

def flip_byte(path: pathlib.Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def produce(start: int, stop: int) -> dict:
    rows = np.arange(start, stop)
    logits = np.stack([np.sin(rows * (c + 1.0)) for c in range(10)], axis=1).astype(np.float32)
    return {"clean_logits": logits, "adv_logits": -logits, "labels": (rows % 10).astype(np.int32),
            "success": rows % 2 == 0, "norm": rows.astype(np.float32) / 100}


def build_store(directory: pathlib.Path, produce_fn=produce) -> "store.LogitStore":
    return store.build(directory, 50, produce_fn, shard_size=16, config={"test": 1}, progress=False)


def files_of(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_flipped_byte_in_a_shard_is_an_error_naming_it_and_build_repairs_it(tmp_path):
    directory = tmp_path / "store"
    build_store(directory)
    original = files_of(directory)
    shard = directory / "shard-00001.adv_logits.npy"
    flip_byte(shard, offset=len(shard.read_bytes()) - 3)  # inside the data, not the header
    opened = store.open(directory)
    np.asarray(opened.shard("adv_logits", 0))  # an intact shard still reads
    with pytest.raises(store.DamagedStore, match=r"shard-00001\.adv_logits\.npy is damaged.*jaxlogit logits"):
        opened["adv_logits"]
    calls = []
    rebuilt = build_store(directory, lambda a, b: calls.append(a) or produce(a, b))
    assert calls == [16, 32, 48]  # from the damaged shard on, not from scratch
    assert files_of(directory) == original
    np.testing.assert_array_equal(rebuilt["adv_logits"], produce(0, 50)["adv_logits"])


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_manifest_or_truncated_shard_is_one_line_and_build_repairs_it(tmp_path, damage):
    directory = tmp_path / "store"
    build_store(directory)
    original = files_of(directory)
    target = directory / ("manifest.json" if damage == "flip" else "shard-00002.labels.npy")
    if damage == "flip":
        target.write_text(target.read_text().replace('"shard_size": 16', '"shard_size": 17'))
    else:
        target.write_bytes(target.read_bytes()[:-7])
    with pytest.raises(store.DamagedStore, match=target.name) as err:
        opened = store.open(directory)
        opened["labels"]
    assert "\n" not in str(err.value)
    build_store(directory)
    assert files_of(directory) == original


def test_stores_written_before_digests_are_read_unverified(tmp_path):
    directory = tmp_path / "store"
    build_store(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    for field in ("digests", "sha256"):
        manifest.pop(field)
    (directory / "manifest.json").write_text(json.dumps({**manifest, "version": 1}))
    np.testing.assert_array_equal(store.open(directory)["norm"], produce(0, 50)["norm"])


def test_a_run_that_fails_before_its_first_shard_leaves_nothing(tmp_path):
    def failing(start, stop):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        build_store(tmp_path / "store", failing)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_backbone_is_an_error_and_backbone_train_replaces_it(tmp_path, monkeypatch):
    config = training.default_config(ARCH)
    directory = training.backbone_dir(config, tmp_path)
    models.save_checkpoint(directory, ARCH, random_variables(0))
    state_files = sorted((p for p in (directory / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    flip_byte(state_files[-1])
    with pytest.raises(JaxlogitError, match=r"corrupt checkpoint .*SHA-256.*backbone train") as err:
        training.ensure_backbone(config, cache=tmp_path)
    assert "\n" not in str(err.value)

    def retrain(config, target, data_dir, progress):  # stands in for the real training
        models.save_checkpoint(target, ARCH, random_variables(2))
        return training.load_backbone(target)

    monkeypatch.setattr(training, "_train_and_save", retrain)
    rebuilt = training.ensure_backbone(config, cache=tmp_path, rebuild=True)
    assert leaves_equal(rebuilt.variables, random_variables(2))
    assert leaves_equal(training.ensure_backbone(config, cache=tmp_path).variables, random_variables(2))


def test_a_damaged_corrector_is_an_error_and_correct_train_replaces_it(tmp_path):
    logits = build_store(tmp_path / "store")
    config = pipeline.CorrectorConfig(hidden=None, epochs=1, batch_size=8, holdout_fraction=0.0)
    trained = pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False)
    kernel = np.asarray(trained.params["output"]["kernel"])
    params_files = sorted((p for p in (trained.directory / "params").rglob("*") if p.is_file()),
                          key=lambda p: p.stat().st_size)
    flip_byte(params_files[-1])
    with pytest.raises(JaxlogitError, match=r"damaged corrector .*SHA-256.*correct train"):
        pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False)
    again = pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False, rebuild=True)
    np.testing.assert_array_equal(np.asarray(again.params["output"]["kernel"]), kernel)
    pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False)  # intact again
