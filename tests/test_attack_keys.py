"""Per-image attack keys: image i's key is ``fold_in(key(seed), i)`` (i its index in the split), so
its random start, hence its store row, does not depend on the batch it was attacked in."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxlogit import attacks, data, pipeline
from jaxlogit.attacks import _geometry
from jaxlogit.errors import JaxlogitError

PGD = pipeline.AttackConfig("pgd", steps=2)
LIMIT = 24
PICKED = np.array([1, 5, 9, 17, 22])  # a "selected set" among the first LIMIT test images


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_a_random_start_depends_only_on_its_own_key(norm):
    starts = jax.jit(lambda keys, x: _geometry.sample_starts(_geometry.GEOMETRIES[norm], keys, x, 0.1))
    x = jax.random.uniform(jax.random.key(3), (8, 5, 5, 2))
    keys = attacks.sample_keys(jax.random.key(0), np.arange(100, 108))
    batch = np.asarray(starts(keys, x))
    for i in range(8):
        np.testing.assert_array_equal(np.asarray(starts(keys[i : i + 1], x[i : i + 1]))[0], batch[i])
    reordered = starts(keys[::-1], x[::-1])
    np.testing.assert_array_equal(np.asarray(reordered), batch[::-1])
    assert not np.array_equal(batch[0] - x[0], batch[1] - x[1])  # the keys differ, so do the starts


def linear_problem(batch: int = 8):
    w = jax.random.normal(jax.random.key(1), (16, 3))
    logits_fn = jax.tree_util.Partial(lambda w, images: images.reshape(images.shape[0], -1) @ w, w)
    x = jax.random.uniform(jax.random.key(2), (batch, 4, 4, 1))
    return logits_fn, x, logits_fn(x).argmax(-1)


def test_pgd_with_one_key_per_image_does_not_depend_on_the_order_of_the_batch():
    logits_fn, x, y = linear_problem()
    settings = {"eps": 0.1, "steps": 3, "step_size": 0.02}
    keys = attacks.sample_keys(jax.random.key(0), np.arange(8))
    per_image = attacks.pgd(logits_fn, x, y, key=keys, **settings)
    order = np.array([5, 2, 7, 0, 1, 6, 4, 3])
    shuffled = attacks.pgd(logits_fn, x[order], y[order], key=keys[order], **settings)
    for got, want in zip(shuffled, per_image):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want)[order])
    with pytest.raises(JaxlogitError, match="3 keys for 8 images"):
        attacks.pgd(logits_fn, x, y, key=keys[:3], **settings)


@pytest.fixture(scope="module")
def stores(trained_compact, tmp_path_factory):
    """PGD-2 stores of the first LIMIT test images made with attack batches 8 and 16 (caches of their own)."""
    split = data.load("fashion_mnist", "test")
    made = {}
    for batch in (8, 16):
        cache = tmp_path_factory.mktemp(f"batch{batch}")
        made[batch] = pipeline.ensure_logits(
            trained_compact.backbone,
            PGD,
            split,
            "test",
            limit=LIMIT,
            batch_size=batch,
            cache=cache,
            progress=False,
        )
    return made


def test_a_store_does_not_depend_on_the_attack_batch(trained_compact, stores):
    a, b = stores[8], stores[16]
    assert a.directory.name == b.directory.name  # one key: the batch is not part of it
    assert set(a.keys()) == set(b.keys())
    for key in a.keys():
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
    split, cache = data.load("fashion_mnist", "test"), a.directory.parent.parent
    again = pipeline.ensure_logits(
        trained_compact.backbone, PGD, split, "test", limit=LIMIT, batch_size=16, cache=cache, progress=False
    )  # the store of batch 8 (shards of 64 rows) is the one asked for with batch 16
    assert again.directory == a.directory and again.config == a.config


def test_selected_logits_attacked_alone_equal_the_rows_of_the_full_store(trained_compact, stores, tmp_path):
    split = data.load("fashion_mnist", "test")
    args = (trained_compact.backbone, PGD, split, "test", PICKED)
    alone = pipeline.selected_logits(*args, limit=LIMIT, cache=tmp_path, batch_size=8, progress=False)
    assert not pipeline.store.is_complete(pipeline.store_dir(*args[:4], LIMIT, tmp_path))  # attacked alone
    full = stores[8]
    for key, rows in alone.items():
        assert np.array_equal(rows, np.asarray(full[key])[PICKED]), key
    sliced = pipeline.selected_logits(*args, limit=LIMIT, cache=full.directory.parent.parent, progress=False)
    for key, rows in sliced.items():
        assert np.array_equal(rows, alone[key]), key


def test_one_image_attacked_alone_matches_its_row_of_a_batch(trained_compact, stores):
    """Its random start is bitwise the same (above); the logits agree to float32 rounding only: XLA:CPU
    runs a batch of fewer than 4 images through other convolution kernels, whose clean forward pass
    already differs in the last bit (batches of 4 or more images agree bitwise, as the stores show)."""
    split = data.load("fashion_mnist", "test")
    program = pipeline.attack_program(trained_compact.backbone.logits_fn(), PGD)
    i = 13
    x, y = split.get_batch(np.array([i]))
    clean, adv, success, norm = (np.asarray(o) for o in program(x, y, np.array([i])))
    row = stores[16]
    np.testing.assert_allclose(clean, np.asarray(row["clean_logits"])[i : i + 1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(adv, np.asarray(row["adv_logits"])[i : i + 1], rtol=0, atol=1e-4)
    np.testing.assert_allclose(norm, np.asarray(row["norm"])[i : i + 1], rtol=0, atol=1e-6)
    assert success[0] == np.asarray(row["success"])[i]


def test_a_streamed_split_attack_gives_the_rows_of_its_store(trained_compact, stores, monkeypatch):
    """``attack_split`` (``jaxlogit attack``) decodes one call's images at a time: it never asks the
    reader for more than a call's rows, keeps no image unless told, and its rows are the store's."""
    split = data.load("fashion_mnist", "test")
    reads = []
    real = data.iter_batches
    monkeypatch.setattr(
        data, "iter_batches", lambda s, ids, rows, **kw: reads.append(rows) or real(s, ids, rows, **kw)
    )
    logits_fn = trained_compact.backbone.logits_fn()
    out = pipeline.attack_split(logits_fn, PGD, split, LIMIT, batch_size=8)
    assert reads == [8] and out.images is None and out.labels.shape == (LIMIT,)
    row = stores[8]
    np.testing.assert_array_equal(out.labels, np.asarray(row["labels"]))
    for key in ("clean_logits", "adv_logits", "success", "norm"):
        np.testing.assert_array_equal(getattr(out, key), np.asarray(row[key]), err_msg=key)
    kept = pipeline.attack_split(logits_fn, PGD, split, 5, batch_size=8, keep_images=True)
    np.testing.assert_array_equal(kept.images, split.get_batch(np.arange(5))[0])
    np.testing.assert_array_equal(kept.adv_logits, out.adv_logits[:5])
