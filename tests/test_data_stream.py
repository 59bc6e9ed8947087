"""Tests of jaxlogit.data.iter_batches / BatchReader: grain's worker processes give the pixels, labels
and order of ``split.get_batch`` on both ImageNet layouts, stop when closed, and a bad
``--data-workers`` is a one-line error."""

from __future__ import annotations

import gc
import multiprocessing
import os

import numpy as np
import pytest

from jaxlogit import data, training
from jaxlogit.cli import main
from jaxlogit.data import _stream, testing
from jaxlogit.errors import JaxlogitError

WNIDS = ("n01440764", "n01443537", "n15075141")
SIZES = ((375, 500, 3), (300, 257, 3), (120, 90, 3), (240, 333))  # the last one grey


def _images(seed: int, count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, SIZES[i % len(SIZES)], dtype=np.uint8) for i in range(count)]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    monkeypatch.delenv("JAXLOGIT_DATA", raising=False)
    monkeypatch.setenv("JAXLOGIT_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def folder_split(tmp_path):
    """An ImageNet folder of 8 JPEGs of several sizes (one grey) in 3 classes."""
    testing.write_image_folder(tmp_path, "val", {w: _images(i, 3 - i % 2) for i, w in enumerate(WNIDS)})
    return data.load("imagenet", "validation", data_dir=tmp_path)


@pytest.fixture
def tfds_split(tmp_path):
    """A prepared imagenet2012 (ArrayRecord) of 6 JPEGs."""
    examples = [
        (testing.encode_image(pixels), WNIDS[i % 3], f"ILSVRC2012_val_{i:08d}.JPEG")
        for i, pixels in enumerate(_images(7, 6))
    ]
    testing.write_tfds_imagenet(tmp_path / "tfds", {"validation": examples})
    return data.load("imagenet", "validation", data_dir=tmp_path / "tfds")


@pytest.fixture
def shared_memory(monkeypatch):
    """The names of the shared-memory blocks grain's workers hand images over in, as they arrive."""
    from grain._src.python.ipc import shared_memory_array

    names = []
    real = shared_memory_array._open_leaf_from_shm

    def record(leaf):
        if isinstance(leaf, shared_memory_array.SharedMemoryArrayMetadata):
            names.append(leaf.name)
        return real(leaf)

    monkeypatch.setattr(shared_memory_array, "_open_leaf_from_shm", record)
    gc.disable()  # as at exit: a block that only a collection would free counts as leaked
    yield names
    gc.enable()


def _assert_released(shared_memory: list[str]) -> None:
    """No worker process is left and every shared-memory block handed over is unlinked."""
    assert not multiprocessing.active_children()
    assert shared_memory and not [n for n in shared_memory if os.path.exists(f"/dev/shm/{n.lstrip('/')}")]


def _assert_batches_equal_get_batch(split, indices, batch_size, workers):
    got = list(data.iter_batches(split, indices, batch_size, workers=workers))  # exhausting it closes it
    starts = range(0, len(indices), batch_size)
    assert len(got) == len(starts)
    for start, (x, y) in zip(starts, got):
        want_x, want_y = split.get_batch(indices[start : start + batch_size])
        assert type(x) is np.ndarray and x.dtype == np.float32 and y.dtype == np.int32  # not in shared memory
        np.testing.assert_array_equal(x, want_x)  # the same pixels, bit for bit
        np.testing.assert_array_equal(y, want_y)


def test_worker_processes_read_an_image_folder_in_order(folder_split, shared_memory):
    indices = np.array([6, 0, 3, 3, 5, 7, 1, 2, 4, 0])  # not sorted, with repeats
    assert isinstance(folder_split, data.ImageFolderSplit) and len(folder_split) == 8
    _assert_batches_equal_get_batch(folder_split, indices, 4, workers=2)
    _assert_released(shared_memory)


def test_a_worker_process_reads_the_tfds_arrayrecord_layout_in_order(tfds_split, shared_memory):
    assert isinstance(tfds_split, data.TfdsImageSplit)
    indices = np.array([5, 2, 0, 4, 1, 3, 2])  # the last batch holds one image
    _assert_batches_equal_get_batch(tfds_split, indices, 3, workers=1)
    _assert_released(shared_memory)


def test_closing_early_stops_the_workers(folder_split, shared_memory):
    with data.iter_batches(folder_split, np.arange(7), 2, workers=1) as batches:
        x, _ = next(batches)
        assert x.shape == (2, 224, 224, 3)
        assert multiprocessing.active_children()
    _assert_released(shared_memory)


def test_in_process_threads_and_memory_splits_keep_the_order(folder_split):
    _assert_batches_equal_get_batch(folder_split, np.array([4, 1, 6, 0, 2]), 2, workers=0)
    rng = np.random.default_rng(0)
    memory = data.ArraySplit(rng.integers(0, 256, (9, 5, 5, 1), dtype=np.uint8), np.arange(9) % 3, "abc")
    _assert_batches_equal_get_batch(memory, np.array([8, 2, 2, 5, 0, 7, 1]), 3, workers=4)
    assert list(data.iter_batches(folder_split, np.array([], int), 3, workers=0)) == []


def test_a_reader_continues_consecutive_ranges_and_restarts_on_a_jump(folder_split, monkeypatch):
    opened = []
    real = _stream.iter_batches
    monkeypatch.setattr(
        _stream,
        "iter_batches",
        lambda split, rows, *a, **k: opened.append(rows) or real(split, rows, *a, **k),
    )
    indices = np.array([3, 1, 6, 0, 5, 2, 4])
    with data.BatchReader(folder_split, indices, 2, workers=0) as reader:
        parts = [list(reader.read(0, 4)), list(reader.read(4, 7)), list(reader.read(2, 4))]
    assert [list(rows) for rows in opened] == [list(indices), list(indices[2:])]  # one stream, one restart
    got = [y for part in parts for _, y in part]
    want = [indices[a:b] for a, b in ((0, 2), (2, 4), (4, 6), (6, 7), (2, 4))]
    for y, rows in zip(got, want):
        np.testing.assert_array_equal(y, folder_split.labels[rows])
    assert len(got) == len(want)


def test_predict_classes_reads_through_the_workers_option(folder_split, monkeypatch):
    seen = []
    real = data.iter_batches
    monkeypatch.setattr(data, "iter_batches", lambda *a, **k: seen.append(k["workers"]) or real(*a, **k))
    mean_pixel = training.predict_classes(
        lambda x: x.mean(axis=(1, 2)), folder_split, batch_size=3, workers=0
    )
    x, _ = folder_split.get_batch(np.arange(8))
    np.testing.assert_array_equal(mean_pixel, x.mean(axis=(1, 2)).argmax(-1))
    assert seen == [0]


@pytest.mark.parametrize("workers", [-1, 1.5, True, "2"])
def test_bad_workers_are_a_one_line_library_error(workers, folder_split):
    with pytest.raises(JaxlogitError, match=r"--data-workers=.*pass 0") as info:
        data.iter_batches(folder_split, np.arange(3), 2, workers=workers)
    assert "\n" not in str(info.value)


def test_the_default_workers_come_from_the_environment_or_the_cores(monkeypatch):
    monkeypatch.setenv("JAXLOGIT_DATA_WORKERS", "3")
    assert data.check_workers(None) == data.default_workers() == 3
    monkeypatch.delenv("JAXLOGIT_DATA_WORKERS")
    assert 1 <= data.default_workers() <= data.MAX_DEFAULT_WORKERS
    monkeypatch.setenv("JAXLOGIT_DATA_WORKERS", "-1")
    with pytest.raises(JaxlogitError, match="JAXLOGIT_DATA_WORKERS='-1': set it to 0"):
        data.default_workers()


@pytest.mark.parametrize(
    "argv",
    [
        ["logits", "--arch", "resnet_compact", "--attack", "pgd", "--split", "test", "--data-workers", "-1"],
        ["attack", "--arch", "resnet_compact", "--attack", "pgd", "--data-workers", "-2"],
        ["backbone", "eval", "--arch", "resnet_compact", "--data-workers", "-1"],
    ],
)
def test_a_bad_data_workers_option_is_a_one_line_cli_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and err.startswith("error: --data-workers=") and err.count("\n") == 1


def test_an_experiment_rejects_bad_data_workers_in_one_line(capsys, tmp_path):
    from experiments import _common

    main_ = _common.cli_main("probe", lambda setup, out: pytest.fail("ran"), "probe")
    with pytest.raises(SystemExit) as exit_:
        main_(["--data-workers", "-1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code != 0 and err.startswith("error: --data-workers=-1") and err.count("\n") == 1
    seen = []
    _common.cli_main("probe", lambda setup, out: seen.append(setup), "probe")(
        ["--data-workers", "3", "--out", str(tmp_path)]
    )
    assert seen[0].data_workers == 3
