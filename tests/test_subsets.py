"""Subsets that mean something (issue 17): class-balanced seeded limits on ImageNet, --image-size,
the selected set from a file of names, the paper's --holdout 0, and the setup options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments import _common
from jaxlogit import data, pipeline, store
from jaxlogit.cli import main
from jaxlogit.data import testing
from jaxlogit.errors import JaxlogitError

WNIDS = tuple(data.imagenet_wnids()[i] for i in (3, 7, 11))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny ImageNet image-folder tree: 3 classes x 3 validation, 3 x 4 training images."""
    root = tmp_path_factory.mktemp("tiny")
    testing.write_tiny_imagenet(root, WNIDS, {"validation": 3, "train": 4}, tfds=False)
    return root / "folders"


def test_balanced_indices_spread_evenly_over_classes_and_depend_on_the_seed():
    labels = np.repeat(np.arange(5), [40, 3, 25, 1, 31])
    first = data.balanced_indices(labels, 12, seed=0)
    counts = np.bincount(labels[first], minlength=5)
    assert first.size == 12 and np.all(np.diff(first) > 0)
    assert counts[3] == 1 and set(counts[[0, 1, 2, 4]]) <= {2, 3}  # 12 over 5 classes, one has 1 image
    assert np.array_equal(data.balanced_indices(labels, 12, seed=0), first)
    assert not np.array_equal(data.balanced_indices(labels, 12, seed=1), first)
    assert np.array_equal(data.balanced_indices(labels, 500, seed=0), np.arange(labels.size))


def test_a_subset_split_reads_its_images_and_has_its_own_fingerprint(folders):
    split = data.load("imagenet", "validation", folders, image_size=32)
    subset = data.limited(split, 3, balanced=True, seed=0)
    assert isinstance(subset, data.SubsetSplit) and len(subset) == 3
    assert sorted(subset.labels.tolist()) == sorted({int(v) for v in split.labels})  # one per class
    x, y = subset.get_batch([0, 2])
    x_base, y_base = split.get_batch(subset.indices[[0, 2]])
    assert np.array_equal(x, x_base) and np.array_equal(y, y_base)
    other = data.limited(split, 3, balanced=True, seed=5)
    assert len({split.fingerprint, subset.fingerprint, other.fingerprint}) == 3
    assert subset.file_names == tuple(split.file_names[i] for i in subset.indices)
    assert data.limited(split, 3, balanced=False) is split  # first-N datasets keep the pipeline's limit


def test_image_size_crops_every_variant_and_keys_the_data(folders):
    small = data.load("imagenet", "train", folders, image_size=40)
    x, _ = small.get_batch(np.arange(len(small)))  # grey, CMYK, PNG-as-.JPEG, 500x375, 60x80 ...
    assert x.shape == (12, 40, 40, 3) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert small.image_shape == (40, 40, 3)
    assert small.fingerprint != data.load("imagenet", "train", folders).fingerprint
    with pytest.raises(JaxlogitError, match="--image-size"):
        data.load("fashion_mnist", "test", image_size=40)
    with pytest.raises(JaxlogitError, match="at least 32"):
        data.load("imagenet", "train", folders, image_size=16)


def test_selected_file_names_pick_those_images_and_unknown_names_are_one_line_errors(folders, tmp_path):
    split = data.load("imagenet", "validation", folders)
    listing = tmp_path / "selected.txt"
    listing.write_text(f"# the authors' list\n{split.file_names[4]}\n\nval/x/{split.file_names[1]}\n")
    setup = _common.default_setup("imagenet", data_dir=str(folders), selected_file=str(listing))
    assert _common.selected_indices(setup).tolist() == [1, 4]
    listing.write_text(f"{split.file_names[0]}\nILSVRC2012_val_09999999.JPEG\n")
    with pytest.raises(JaxlogitError, match=r"1 name\(s\) not in the validation split .*09999999") as err:
        _common.selected_indices(setup)
    assert "\n" not in str(err.value)
    fashion = dataclasses.replace(_common.default_setup("fashion_mnist"), selected_file=str(listing))
    with pytest.raises(JaxlogitError, match="no file names"):
        _common.selected_indices(fashion)


def test_setup_options_set_the_protocol_and_every_report_states_the_subsets():
    setup = _common.apply_setup_options(
        _common.default_setup("imagenet"),
        hidden=0,
        epochs=2,
        holdout=0.0,
        test_limit=7,
        per_class=None,
        image_size=64,
        backbones=("resnet50",),
        subset_seed=3,
        selected_file=None,
    )
    assert setup.corrector.hidden is None and setup.corrector.epochs == 2
    assert setup.corrector.holdout_fraction == 0.0 and setup.corrector.lr == pipeline.CorrectorConfig().lr
    assert (setup.test_limit, setup.per_class, setup.image_size, setup.subset_seed) == (7, 1, 64, 3)
    statement = _common.subset_statement(dataclasses.asdict(setup))
    assert "evaluation images: 7 images, class-balanced, drawn with seed 3" in statement
    fashion = _common.subset_statement(dataclasses.asdict(_common.default_setup("fashion_mnist")))
    assert "training images: the first 4000 images" in fashion


def test_holdout_zero_trains_on_every_row_and_keeps_the_last_epoch(tmp_path):
    rng = np.random.default_rng(0)
    rows = {
        "clean_logits": rng.normal(size=(40, 4)).astype(np.float32),
        "adv_logits": rng.normal(size=(40, 4)).astype(np.float32),
        "labels": rng.integers(0, 4, 40).astype(np.int32),
        "success": np.ones(40, bool),
        "norm": np.ones(40, np.float32),
    }

    def produce(a, b):
        return {k: v[a:b] for k, v in rows.items()}

    logits = store.build(tmp_path / "store", 40, produce, config={"test": "holdout"}, progress=False)
    config = pipeline.CorrectorConfig(hidden=8, epochs=3, batch_size=64, holdout_fraction=0.0)
    fitted = pipeline.fitting_batch(config, len(logits))
    assert fitted.batch_size == 40  # fewer rows than a batch: one batch of all of them
    trained = pipeline.ensure_corrector(logits, fitted, cache=str(tmp_path), progress=False)
    assert trained.meta["best_epoch"] == 3
    assert all(np.isnan(a) for a in trained.meta["holdout_accuracy"])


def test_commands_on_imagenet_need_converted_weights_of_an_imagenet_arch(capsys, tmp_path):
    base = ["logits", "--dataset", "imagenet", "--attack", "pgd", "--split", "validation"]
    for extra, words in (
        (["--arch", "resnet50"], ("--weights-dir", "jaxlogit convert")),
        (["--arch", "resnet_compact", "--weights-dir", str(tmp_path)], ("resnet_compact", "resnet50")),
        (["--arch", "resnet50", "--weights-dir", str(tmp_path)], ("jaxlogit convert",)),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([*base, *extra])
        err = capsys.readouterr().err
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert exit_.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert all(word in lines[0] for word in words), lines[0]
