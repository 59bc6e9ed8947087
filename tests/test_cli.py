"""The CLI: every command listed; bad input is one line on stderr with exit 2 and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from jaxlogit import models
from jaxlogit.cli import main

COMMANDS = ("info", "models", "convert", "backbone", "attack", "bench", "logits", "correct")


def run_cli(*args, env=None):
    """Runs ``python -m jaxlogit ARGS`` and returns (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "jaxlogit", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_one_line_error(code, stderr, *words):
    assert code == 2, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_help_lists_every_command(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"  {command} " in out, command


def test_unknown_arch_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["backbone", "eval", "--arch", "resnet51"])
    err = capsys.readouterr().err
    assert_one_line_error(exit_.value.code, err, "resnet51", "resnet_compact")


def test_missing_data_is_one_line(tmp_path):
    code, _, err = run_cli(
        "backbone",
        "eval",
        "--arch",
        "resnet_compact",
        "--data-dir",
        str(tmp_path / "empty"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert_one_line_error(code, err, "dataset-fashion-mnist")


def test_corrupt_checkpoint_is_one_line(trained_compact, tmp_path):
    import shutil

    from conftest import TEST_BACKBONE

    from jaxlogit import training

    cache = tmp_path / "cache"
    target = training.backbone_dir(TEST_BACKBONE, cache)
    shutil.copytree(trained_compact.backbone.directory, target)
    for path in (target / "state").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"garbage")
    code, _, err = run_cli(
        "backbone",
        "eval",
        "--arch",
        "resnet_compact",
        "--epochs",
        str(TEST_BACKBONE.epochs),
        "--cache-dir",
        str(cache),
    )
    assert_one_line_error(code, err, str(target.name))


def test_backbone_eval_prints_the_accuracy_last(trained_compact, test_cache):
    from conftest import TEST_BACKBONE

    from jaxlogit import data, training

    code, out, err = run_cli(
        "backbone",
        "eval",
        "--arch",
        "resnet_compact",
        "--epochs",
        str(TEST_BACKBONE.epochs),
        "--cache-dir",
        str(test_cache),
    )
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    expected = training.accuracy(trained_compact.backbone.logits_fn(), data.load("fashion_mnist", "test"))
    assert last == f"accuracy: {expected:.4f}"


def test_convert_writes_a_checkpoint_equal_to_the_import(tmp_path):
    torch = pytest.importorskip(
        "torch"
    )  # the torch extra is installed in CI; this guards library-only installs
    import hashlib

    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet50(weights=None).state_dict()
    weights = tmp_path / "resnet50.pth"
    torch.save(state, weights)
    code, out, err = run_cli(
        "convert", "--arch", "resnet50", "--weights", str(weights), "--out", str(tmp_path / "ckpt")
    )
    assert code == 0, err
    _, variables, meta = models.load_checkpoint(tmp_path / "ckpt")
    expected = models.from_torchvision("resnet50", state)
    assert meta["arch"] == "resnet50"
    assert meta["source_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    kernel = variables["params"]["fc"]["kernel"]
    assert np.array_equal(np.asarray(kernel), np.asarray(expected["params"]["fc"]["kernel"]))


def test_convert_rejects_weights_of_another_arch(tmp_path):
    torch = pytest.importorskip("torch")
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    code, _, err = run_cli(
        "convert", "--arch", "resnet50", "--weights", str(weights), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(code, err, "resnet50")
    assert not (tmp_path / "o").exists()


def test_info_reports_the_dataset_and_devices():
    code, out, err = run_cli("info")
    assert code == 0, err
    assert "devices: cpu:0" in out
    assert "fashion_mnist: /" in out  # CI installs the Debian package
