"""Shared fixtures. A compact backbone trained once per session backs the strength tests."""

from __future__ import annotations

import os
import pathlib
import types

import jax
import numpy as np
import pytest

from jaxlogit import data, training

# A short training run: enough for ~90% on Fashion-MNIST, so attack-strength tests are meaningful.
TEST_BACKBONE = training.BackboneConfig(arch="resnet_compact", epochs=1)


@pytest.fixture(scope="session")
def test_cache(tmp_path_factory) -> pathlib.Path:
    """The cache root for artifacts tests make ($JAXLOGIT_TEST_CACHE keeps them across runs)."""
    kept = os.environ.get("JAXLOGIT_TEST_CACHE")
    return pathlib.Path(kept) if kept else tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def trained_compact(test_cache):
    """A trained compact backbone and 256 of its test images.

    Returns an object with ``backbone``, ``logits_fn`` (x in [0,1] -> (B,10)), ``x``
    (256,28,28,1) float32 and ``y`` (256,) int32, and ``clean_accuracy`` on those images.
    """
    backbone = training.ensure_backbone(TEST_BACKBONE, cache=test_cache, progress=False)
    split = data.load("fashion_mnist", "test")
    x, y = split.get_batch(np.arange(256))
    logits_fn = jax.jit(backbone.logits_fn())
    clean_accuracy = float(np.mean(np.argmax(logits_fn(x), -1) == y))
    return types.SimpleNamespace(backbone=backbone, logits_fn=logits_fn, x=x, y=y, clean_accuracy=clean_accuracy)
