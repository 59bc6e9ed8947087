"""Reliability: nothing of the user's is destroyed, damage is detected, faults are one line."""

from __future__ import annotations

import errno
import os
import pathlib

import jax
import numpy as np
import pytest

from jaxlogit import _digest, _lock, models, paths
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
