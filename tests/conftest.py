"""Shared fixtures. A compact backbone trained once per session backs the strength tests."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import pathlib
import shutil
import tempfile
import types

import jax
import numpy as np
import pytest

from jaxlogit import data, training

# One persistent XLA compilation cache per test run, made by the controlling process before the
# pytest-xdist workers start: both workers and every process a test starts inherit it, so a program
# one of them compiled (same HLO, same flags) is loaded by the others instead of compiled again.
if "PYTEST_XDIST_WORKER" not in os.environ and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxlogit-test-xla-")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
if os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # a process a test starts may go without it
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    if os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        jax.config.update(
            "jax_persistent_cache_min_compile_time_secs",
            float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
        )

# jaxlogit's own cache (<cache>/xla, _xla.enable_compilation_cache) stays off unless a test asks.
os.environ.setdefault("JAXLOGIT_XLA_CACHE", "0")
# Images from disk are decoded in the test's own process unless a test asks for worker processes.
os.environ.setdefault("JAXLOGIT_DATA_WORKERS", "0")


def pytest_collection_modifyitems(items):
    """The slow tests first, so that under ``-n 2 --dist worksteal`` the long ones start early and the
    short ones fill the gaps (otherwise a long test collected last keeps one worker busy alone)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# A short training run: enough for ~90% on Fashion-MNIST, so attack-strength tests are meaningful.
TEST_BACKBONE = training.BackboneConfig(arch="resnet_compact", epochs=1)


@pytest.fixture(scope="session")
def test_cache(tmp_path_factory) -> pathlib.Path:
    """The cache root for artifacts tests make ($JAXLOGIT_TEST_CACHE keeps them across runs).

    Shared by all pytest-xdist workers of a run (the parent of each worker's base temp dir).
    """
    kept = os.environ.get("JAXLOGIT_TEST_CACHE")
    if kept:
        return pathlib.Path(kept)
    root = tmp_path_factory.getbasetemp()
    shared = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    (shared / "cache").mkdir(exist_ok=True)
    return shared / "cache"


@contextlib.contextmanager
def exclusive(lock_path: pathlib.Path):
    """An inter-process lock (one xdist worker trains, the others wait and load)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def trained_compact(test_cache):
    """A trained compact backbone and 256 of its test images.

    Returns an object with ``backbone``, ``logits_fn`` (x in [0,1] -> (B,10)), ``x``
    (256,28,28,1) float32 and ``y`` (256,) int32, and ``clean_accuracy`` on those images.
    """
    with exclusive(test_cache / "trained_compact.lock"):
        backbone = training.ensure_backbone(TEST_BACKBONE, cache=test_cache, progress=False)
    split = data.load("fashion_mnist", "test")
    x, y = split.get_batch(np.arange(256))
    logits_fn = jax.jit(backbone.logits_fn())
    clean_accuracy = float(np.mean(np.argmax(logits_fn(x), -1) == y))
    return types.SimpleNamespace(
        backbone=backbone, logits_fn=logits_fn, x=x, y=y, clean_accuracy=clean_accuracy
    )
