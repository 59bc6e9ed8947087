"""One process of the tests' small job (tests/test_multihost.py), run as a subprocess.

``python tests/_multihost_worker.py CACHE [--coordinator H:P --num-processes N --process-id I]``
builds the PGD logit store of a tiny linear backbone on 64 synthetic images (4 shards of 16
rows: attack batches of 2), then (unless ``--store-only``) trains a small corrector on it, and
prints one JSON line: the store and corrector folders and the shards this process wrote.
``--die-after-shards K`` kills this process (SIGKILL) once it has committed K shards.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

import flax.linen as nn
import jax
import numpy as np

from jaxlogit import data, distributed, pipeline, training
from jaxlogit.store import _shared, _writer

NUM_IMAGES = 64
ATTACK_BATCH = 2
SHARD_ROWS = 16  # 4 shards, so that each process writes some
CORRECTOR = pipeline.CorrectorConfig(hidden=16, epochs=2, batch_size=8, lr=5e-2)


class Linear(nn.Module):
    """Images (B, 8, 8, 1) -> logits (B, 10)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


def tiny_backbone() -> training.Backbone:
    module = Linear()
    variables = module.init(jax.random.key(1), np.zeros((1, 8, 8, 1), np.float32))
    return training.Backbone(module, variables, {"arch": "linear", "mean": [0.5], "std": [0.25]}, None)


def tiny_split(backbone: training.Backbone) -> data.ArraySplit:
    """Random images labelled with the backbone's own classes (a corrector can learn them)."""
    images = np.random.default_rng(0).integers(0, 256, (NUM_IMAGES, 8, 8, 1), dtype=np.uint8)
    labels = np.argmax(backbone.logits_fn()(images.astype(np.float32) / 255), axis=-1)
    return data.ArraySplit(images, labels, [str(c) for c in range(10)])


def record_writes(written: list[int], die_after: int | None) -> None:
    """Notes every shard this process writes; SIGKILLs it after committing ``die_after`` of them."""
    write_shard, write_record = _writer._write_shard, _shared._write_record

    def noting_write_shard(directory, index, arrays):
        written.append(index)
        return write_shard(directory, index, arrays)

    def dying_write_record(directory, processes, record):
        write_record(directory, processes, record)
        if die_after is not None and len(written) >= die_after:
            os.kill(os.getpid(), signal.SIGKILL)

    _writer._write_shard = noting_write_shard
    _shared._write_record = dying_write_record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache")
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--die-after-shards", type=int)
    parser.add_argument("--store-only", action="store_true")
    args = parser.parse_args()
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    written: list[int] = []
    record_writes(written, args.die_after_shards)
    attack = pipeline.AttackConfig("pgd", eps=0.1, steps=3)
    pipeline.SHARD_ROWS = SHARD_ROWS  # new stores' shard size (2,000 rows by default)
    backbone, cache = tiny_backbone(), args.cache
    logits = pipeline.ensure_logits(
        backbone, attack, tiny_split(backbone), "train", batch_size=ATTACK_BATCH, cache=cache, progress=False
    )
    out = {"store": str(logits.directory), "written": written, "devices": jax.device_count()}
    if not args.store_only:
        trained = pipeline.ensure_corrector(logits, CORRECTOR, cache=cache, progress=False)
        out["corrector"] = str(trained.directory)
    print(json.dumps(out), flush=True)
    distributed.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
