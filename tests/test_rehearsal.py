"""The paper's job on a tiny ImageNet, end to end, as a user runs it (issue 17, issue 22).

One session-wide build (``tiny_imagenet``): 3 real wnids x (2 training + 2 validation) images
in both layouts (``val/<wnid>/*.JPEG`` folders and a TFDS-prepared ``imagenet2012`` in
ArrayRecord) with ImageNet's variety (500x375, 60x80, ..., grey, CMYK, a PNG named .JPEG), and
torchvision's ResNet-50, VGG-16-BN and DenseNet-121 with random weights (last layer: nearest class
centroid, so that some images are classified right) saved as ``.pth`` and converted with
``jaxlogit convert``. Every experiment then runs through its command line with the knobs a user
has: ``--image-size 32`` (the paper's is 224; the backbones pool adaptively), ``--backbones``,
``--train-limit``/``--test-limit``, ``--hidden``/``--epochs``.

CI runs what is ImageNet's own: both layouts, the converted weights, class-balanced subsets, the
automatic batches and every command, through Table 1 on the ResNet. Every other experiment on
ImageNet, and Table 1 on all three backbones, is ``extended`` (``pytest -m extended``): the same
experiment code runs end to end in CI on the default (``tests/test_experiments_end_to_end.py``),
and each further ResNet-50 attack compiles for a minute on two cores.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import types

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import exclusive

from experiments import (
    ablation,
    ablation_supporting,
    adaptive,
    bhattacharyya,
    figure1,
    instance,
    supporting_classes,
    table1,
    table2,
    table3,
    tradeoff,
)
from jaxlogit import data
from jaxlogit.cli import cli
from jaxlogit.cli import main as jaxlogit_main
from jaxlogit.data import testing

pytestmark = pytest.mark.slow

SIZE = "32"
ARCHS = ("vgg16_bn", "resnet50", "densenet121")
WNIDS = tuple(data.imagenet_wnids()[i] for i in (1, 500, 999))
CLASSES = tuple(data.imagenet_wnids().index(w) for w in WNIDS)
PER_CLASS = {"train": 2, "validation": 2}
SMALL_CORRECTOR = ("--hidden", "64", "--epochs", "3")
"""A corrector trained in a second (the paper's: D = 10,000, 50 epochs)."""


def build(root: pathlib.Path) -> None:
    """Writes the tiny ImageNet (both layouts) and the three converted backbones into ``root``."""
    testing.write_tiny_imagenet(root, WNIDS, PER_CLASS)
    splits = [data.load("imagenet", s, root / "folders", image_size=int(SIZE)) for s in PER_CLASS]
    x, y = (np.concatenate(parts) for parts in zip(*(s.get_batch(np.arange(len(s))) for s in splits)))
    for arch in ARCHS:
        pth = testing.torchvision_stand_in(arch, x, y, root / f"{arch}.pth")
        command = ["convert", "--arch", arch, "--weights", str(pth), "--out", str(root / "weights" / arch)]
        try:
            jaxlogit_main(command)
        except SystemExit as exit_:
            assert exit_.code in (0, None), f"jaxlogit convert --arch {arch} exited {exit_.code}"
        pth.unlink()


@pytest.fixture(scope="session")
def tiny_imagenet(test_cache):
    """The tiny ImageNet and its converted weights, built once for all workers (file lock)."""
    root = test_cache / "rehearsal-imagenet-v1"
    with exclusive(test_cache / "rehearsal-imagenet.lock"):
        if not (root / "complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            build(root)
            (root / "complete").touch()
    return types.SimpleNamespace(
        folders=root / "folders", tfds=root / "tfds", weights=root / "weights", cache=test_cache
    )


def run_experiment(module, tiny, layout: str, out: pathlib.Path, *options: str) -> dict:
    """``python -m experiments.NAME --dataset imagenet --data-dir D --weights-dir W ...``; its JSON."""
    argv = [
        "--dataset", "imagenet",
        "--data-dir", str(getattr(tiny, layout)),
        "--weights-dir", str(tiny.weights),
        "--cache-dir", str(tiny.cache),
        "--image-size", SIZE,
        "--out", str(out),
        "--quiet",
        *options,
    ]  # fmt: skip
    try:
        module.main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"{module.__name__} exited {exit_.code}"
    name = module.__name__.rsplit(".", 1)[1]
    report = json.loads((out / f"{name}.json").read_text())
    assert report["subsets"] in (out / f"{name}.md").read_text()  # every report states its subsets
    return report


def in_range(accuracies: dict) -> bool:
    """Every accuracy of a report's row (its top-level numbers: clean, adv and their corrected
    values; nested intervals, seeds and the fooled-only block aside) is a percentage."""
    numbers = [v for v in accuracies.values() if isinstance(v, (int, float))]
    return bool(numbers) and all(0.0 <= v <= 100.0 for v in numbers)


@pytest.mark.parametrize(
    "archs",
    [("resnet50",), pytest.param(ARCHS, marks=pytest.mark.extended, id="three-backbones")],
    ids=lambda archs: "-".join(archs),
)
def test_the_readme_command_runs_table1_on_tfds_without_a_batch_flag(tiny_imagenet, tmp_path, archs):
    """The README's command with smaller images and corrector: every image, the default batches
    (issue 22); in CI on the ResNet (the selecting backbone), extended on all three."""
    options = ("--backbones", ",".join(archs), *SMALL_CORRECTOR)
    report = run_experiment(table1, tiny_imagenet, "tfds", tmp_path, *options)
    assert [r["arch"] for r in report["rows"]] == list(archs)
    for row in report["rows"]:
        assert in_range(row["full"]) and in_range(row["selected"])
        assert row["selected"]["clean"] == (100.0 if row["arch"] == "resnet50" else row["selected"]["clean"])
    selected = report["selected_size"]
    assert 1 <= selected <= len(CLASSES)  # at most one per class (--per-class 1, the paper's)
    assert "training images: all images; evaluation images: all images" in report["subsets"]


def test_table1_on_image_folders_takes_class_balanced_subsets(tiny_imagenet, tmp_path):
    options = ("--backbones", "resnet50", "--train-limit", "3", "--test-limit", "3", "--subset-seed", "1")
    report = run_experiment(table1, tiny_imagenet, "folders", tmp_path, *options, *SMALL_CORRECTOR)
    (row,) = report["rows"]
    assert row["arch"] == "resnet50" and in_range(row["full"]) and row["selected"]["clean"] == 100.0
    assert "3 images, class-balanced, drawn with seed 1" in report["subsets"]
    assert 1 <= report["selected_size"] <= 3


def run_on_folders(tiny, tmp_path, *modules, extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """Runs ``modules`` on the image folders, ResNet-50 only; their reports by name. The tests
    that call it share stores and correctors through the cache (whichever worker comes first
    makes them; the other waits and reads them)."""
    options = ("--backbones", "resnet50", *SMALL_CORRECTOR, *extra)
    return {
        m.__name__.rsplit(".", 1)[1]: run_experiment(m, tiny, "folders", tmp_path / m.__name__, *options)
        for m in modules
    }


@pytest.mark.extended  # on the default in CI: tests/test_experiments_end_to_end.py
def test_tables_2_and_3_and_the_ablation_have_every_row(tiny_imagenet, tmp_path):
    runs = run_on_folders(tiny_imagenet, tmp_path, table2, table3, ablation)
    attacks = ["pgd", "mim", "deepfool", "cw"]
    assert [r["attack"] for r in runs["table2"]["rows"]] == attacks
    assert all(in_range({k: v for k, v in r.items() if k != "attack"}) for r in runs["table2"]["rows"])
    matrix = np.asarray(runs["table3"]["matrix"])
    assert [a.split("@")[0] for a in runs["table3"]["attacks"]] == attacks and matrix.shape == (4, 4)
    assert np.all((matrix >= 0) & (matrix <= 100))
    assert set(runs["ablation"]["results"]) == {"two-layer", "single-layer"}
    assert all(in_range(r) for r in runs["ablation"]["results"].values())


@pytest.mark.extended  # on the default in CI: tests/test_experiments_end_to_end.py
def test_figure1_tradeoff_and_the_explanations_have_their_parts(tiny_imagenet, tmp_path):
    modules = (figure1, tradeoff, supporting_classes, bhattacharyya, ablation_supporting, instance)
    runs = run_on_folders(tiny_imagenet, tmp_path, *modules)
    assert set(runs["figure1"]["stats"]) == {"resnet50"}
    assert [r["p_clean"] for r in runs["tradeoff"]["results"]] == list(tradeoff.P_CLEAN)
    assert len(runs["supporting_classes"]["class_names"]) == 1000
    assert set(runs["supporting_classes"]["attacks"]) >= {"pgd"}
    assert set(runs["bhattacharyya"]["attacks"]) >= {"pgd"}
    assert runs["ablation_supporting"]["k"] == runs["instance"]["k"] >= 1
    assert runs["instance"]["image"] in range(len(CLASSES) * PER_CLASS["validation"])


@pytest.mark.extended  # on the default in CI: tests/test_batch_options.py, tests/test_cli_attack.py
def test_adaptive_runs_on_the_tiny_selected_set(tiny_imagenet, tmp_path):
    extra = ("--steps", "5", "--restarts", "1", "--eps-sweep", "8,16", "--adaptive-batch", "3")
    extra += ("--attacks", "pgd")  # the other rows: tests/test_batch_options, tests/test_adaptive
    report = run_on_folders(tiny_imagenet, tmp_path, adaptive, extra=extra)["adaptive"]
    assert [r["attack"] for r in report["rows"]] == ["pgd"]
    for row in report["rows"]:
        assert 2 <= row["n"] <= len(CLASSES) and in_range(row["accuracy"])
        assert row["accuracy"][adaptive.adaptive.WORST] <= row["accuracy"][adaptive.adaptive.OBLIVIOUS]
    assert [s["eps_255"] for s in report["eps_sweep"]] == [8.0, 16.0]
    assert (report["config"]["attack"]["steps"], report["config"]["attack"]["restarts"]) == (5, 1)


def invoke(*args: str) -> str:
    """``jaxlogit ARGS`` through click's CliRunner; its output (the command must succeed)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_takes_imagenet_with_converted_weights(tiny_imagenet):
    source = [
        "--dataset", "imagenet",
        "--data-dir", str(tiny_imagenet.folders),
        "--weights-dir", str(tiny_imagenet.weights),
        "--cache-dir", str(tiny_imagenet.cache),
        "--image-size", SIZE,
        "--quiet",
    ]  # fmt: skip
    model = ["--arch", "resnet50", "--attack", "pgd"]
    out = invoke("logits", *model, "--split", "validation", "--limit", "3", *source)
    assert "images: 3" in out and "clean accuracy: " in out
    corrector = ["--limit", "3", "--hidden", "16", "--epochs", "2", "--holdout", "0"]
    out = invoke("correct", "train", *model, *corrector, *source)
    assert "kept the last epoch (2)" in out
    out = invoke("correct", "eval", *model, *corrector, *source)
    assert "clean accuracy: " in out and "adv   accuracy: " in out
    out = invoke("attack", *model, "--n", "3", *source)
    assert "pgd@16/255 on resnet50, 3 test images" in out
    out = invoke("explain", *model, *corrector, "--per-class", "1", *source)
    assert "selected test images" in out and "rank" in out
