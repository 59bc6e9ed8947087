"""The logit store: round trip, resume after a crash or kill -9, config checks."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxlogit import store
from jaxlogit.errors import JaxlogitError

NUM_ITEMS, SHARD_SIZE, NUM_CLASSES = 103, 10, 7  # 11 shards, the last one short
CONFIG = {"arch": "toy", "attack": "pgd", "eps": 16 / 255, "split": "test"}

# The same deterministic producer, as source, so a subprocess can run it too.
PRODUCER_SOURCE = f"""
import time
import numpy as np

def produce(start, stop, sleep=0.0):
    time.sleep(sleep)
    rng = np.random.default_rng(start)
    n = stop - start
    clean = rng.normal(size=(n, {NUM_CLASSES})).astype(np.float32)
    return {{
        "clean_logits": clean,
        "adv_logits": (clean + rng.normal(size=(n, {NUM_CLASSES}))).astype(np.float32),
        "labels": rng.integers(0, {NUM_CLASSES}, size=n).astype(np.int32),
        "success": rng.random(n) < 0.9,
        "norm": rng.random(n).astype(np.float32),
        "index": np.arange(start, stop, dtype=np.int64),
    }}
"""
_namespace: dict = {}
exec(PRODUCER_SOURCE, _namespace)
produce = _namespace["produce"]

BUILD_SCRIPT = (
    PRODUCER_SOURCE
    + f"""
import functools, json, sys
from jaxlogit import store
directory, sleep = sys.argv[1], float(sys.argv[2])
store.build(directory, {NUM_ITEMS}, functools.partial(produce, sleep=sleep), shard_size={SHARD_SIZE},
            config=json.loads(sys.argv[3]), progress=False)
"""
)


def build_uninterrupted(directory: pathlib.Path) -> store.LogitStore:
    return store.build(directory, NUM_ITEMS, produce, shard_size=SHARD_SIZE, config=CONFIG, progress=False)


def shards_done(directory: pathlib.Path) -> int:
    if not (directory / "manifest.json").exists():
        return 0
    return store.open(directory, allow_incomplete=True).num_shards


def reference_rows() -> dict[str, np.ndarray]:
    """Every array of the store, produced shard by shard as ``build`` does."""
    shards = [produce(a, min(a + SHARD_SIZE, NUM_ITEMS)) for a in range(0, NUM_ITEMS, SHARD_SIZE)]
    return {k: np.concatenate([shard[k] for shard in shards]) for k in shards[0]}


def files_of(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_round_trip(tmp_path):
    built = build_uninterrupted(tmp_path / "s")
    opened = store.open(tmp_path / "s")
    reference = reference_rows()
    assert len(opened) == len(built) == NUM_ITEMS
    assert opened.complete and opened.config == json.loads(json.dumps(CONFIG))
    assert set(opened.keys()) == set(reference)
    for key, value in reference.items():
        assert opened[key].dtype == value.dtype and opened[key].shape == value.shape
        np.testing.assert_array_equal(opened[key], value)
    np.testing.assert_array_equal(opened["index"], np.arange(NUM_ITEMS))
    assert isinstance(opened.shard("clean_logits", 3), np.memmap)
    assert opened.shard("labels", 10).shape == (NUM_ITEMS - 10 * SHARD_SIZE,)


def test_dtypes_are_coerced_and_single_shard_is_memory_mapped(tmp_path):
    def produce_float64(start, stop):
        out = produce(start, stop)
        return {
            **out,
            "clean_logits": out["clean_logits"].astype(np.float64),
            "labels": out["labels"].astype(np.int64),
        }

    opened = store.build(tmp_path / "s", 5, produce_float64, shard_size=8, config=CONFIG, progress=False)
    assert opened["clean_logits"].dtype == np.float32 and opened["labels"].dtype == np.int32
    assert isinstance(opened["adv_logits"], np.memmap)


class Crash(RuntimeError):
    pass


def test_resume_after_exception_equals_uninterrupted(tmp_path):
    build_uninterrupted(tmp_path / "whole")

    def crash_at_shard_4(start, stop):
        if start == 4 * SHARD_SIZE:
            raise Crash
        return produce(start, stop)

    with pytest.raises(Crash):
        store.build(
            tmp_path / "resumed",
            NUM_ITEMS,
            crash_at_shard_4,
            shard_size=SHARD_SIZE,
            config=CONFIG,
            progress=False,
        )
    partial = store.open(tmp_path / "resumed", allow_incomplete=True)
    assert not partial.complete and partial.num_shards == 4 and len(partial) == 4 * SHARD_SIZE
    with pytest.raises(JaxlogitError, match="incomplete.*rerun"):
        store.open(tmp_path / "resumed")

    calls = []
    store.build(
        tmp_path / "resumed",
        NUM_ITEMS,
        lambda a, b: calls.append(a) or produce(a, b),
        shard_size=SHARD_SIZE,
        config=CONFIG,
        progress=False,
    )
    assert calls[0] == 4 * SHARD_SIZE  # resumed after the last complete shard, not from 0
    assert files_of(tmp_path / "resumed") == files_of(tmp_path / "whole")


def test_kill_9_mid_build_then_resume_equals_uninterrupted(tmp_path):
    build_uninterrupted(tmp_path / "whole")
    directory = tmp_path / "killed"
    command = [sys.executable, "-c", BUILD_SCRIPT, str(directory), "0.1", json.dumps(CONFIG)]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    try:
        while shards_done(directory) < 3:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the build never reached shard 3"
            time.sleep(0.02)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    interrupted = store.open(directory, allow_incomplete=True)
    assert not interrupted.complete and 3 <= interrupted.num_shards < NUM_ITEMS // SHARD_SIZE

    subprocess.run(command[:4] + ["0", json.dumps(CONFIG)], check=True)
    assert files_of(directory) == files_of(tmp_path / "whole")


def test_resuming_with_another_config_is_refused(tmp_path):
    build_uninterrupted(tmp_path / "s")
    with pytest.raises(JaxlogitError, match="another configuration.*delete it"):
        store.build(
            tmp_path / "s",
            NUM_ITEMS,
            produce,
            shard_size=SHARD_SIZE,
            config={**CONFIG, "eps": 0.1},
            progress=False,
        )
    with pytest.raises(JaxlogitError, match="another configuration"):
        store.build(
            tmp_path / "s", NUM_ITEMS, produce, shard_size=SHARD_SIZE + 1, config=CONFIG, progress=False
        )


def test_complete_store_is_reused_without_producing(tmp_path):
    build_uninterrupted(tmp_path / "s")
    before = files_of(tmp_path / "s")
    reopened = store.build(
        tmp_path / "s",
        NUM_ITEMS,
        lambda a, b: pytest.fail("produced again"),
        shard_size=SHARD_SIZE,
        config=CONFIG,
        progress=False,
    )
    assert reopened.complete and files_of(tmp_path / "s") == before


def test_missing_store_and_foreign_directory(tmp_path):
    with pytest.raises(JaxlogitError, match="no logit store"):
        store.open(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(JaxlogitError, match="not empty"):
        build_uninterrupted(tmp_path / "foreign")


def test_producer_with_wrong_rows_is_rejected(tmp_path):
    def short(start, stop):
        return produce(start, stop - 1)

    with pytest.raises(ValueError, match="leading dimension"):
        store.build(tmp_path / "s", NUM_ITEMS, short, shard_size=SHARD_SIZE, config=CONFIG, progress=False)
