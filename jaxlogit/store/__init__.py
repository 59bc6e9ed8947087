"""The logit store: per image clean logits, adversarial logits, label, success flag, norm.

Format: one directory holding numpy ``.npy`` shards (``shard-00003.clean_logits.npy``: rows
``[3 * shard_size, 4 * shard_size)`` of ``clean_logits``) and a JSON manifest
(``manifest.json``) that records the configuration, the array layout and which shards are
complete. Why this format rather than array_record or tensorstore/zarr:

* **no extra dependency**: numpy and json are all it takes to read or write a store, here
  or anywhere else;
* **memory-mapped reads**: every shard opens with ``np.load(mmap_mode="r")``, so reading a
  store costs no more memory than the rows actually touched;
* **atomic per shard**: each shard file is written to a temporary file, flushed and moved
  into place with ``os.replace``; the manifest, also replaced atomically, is updated only
  after a shard's files are all in place, so it is the commit record. A crash or ``kill -9``
  loses at most the shard being written, and a rerun resumes after the last committed shard.
* **checked**: the manifest records the SHA-256 of every shard file and of itself; reads
  verify them (``DamagedStore``, one line naming the file), and ``build`` rewrites a damaged
  store from its first damaged shard on. Stores written before digests (manifest version 1)
  are read unverified.
* **one writer**: ``build`` holds an exclusive lock (``.<store>.lock`` beside it) while it
  writes; a second builder of the same store waits, then finds it complete.
* **several processes** (``build(..., processes=jaxlogit.distributed.processes())``): each
  writes only its own shards (shard i: process i % N) and commits them in its own record;
  process 0 then writes the manifest one process would have written (``store._shared``).

Rows are produced deterministically by the caller's ``produce_fn(start, stop)``, so a resumed
build ends byte-identical to an uninterrupted one.

Example::

    from jaxlogit import store

    logits = store.build(directory, num_items=len(split), produce_fn=produce,
                         shard_size=1024, config=config)
    logits = store.open(directory)
    logits["adv_logits"]          # (N, C) float32, read whole (small stores)
    logits.rows("adv_logits", rows)  # (len(rows), C): only those rows read (any store)
    logits.config                 # the dict given to build
"""

from jaxlogit.store._layout import REQUIRED_DTYPES, DamagedStore
from jaxlogit.store._reader import SMALL_ARRAY_BYTES, LogitStore, is_complete, shard_size_of
from jaxlogit.store._reader import open_store as open  # the module's reader
from jaxlogit.store._writer import DEFAULT_SHARD_SIZE, build

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "REQUIRED_DTYPES",
    "SMALL_ARRAY_BYTES",
    "DamagedStore",
    "LogitStore",
    "build",
    "is_complete",
    "open",
    "shard_size_of",
]
