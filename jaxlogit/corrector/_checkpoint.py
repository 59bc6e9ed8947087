"""Saving correctors (orbax + meta.json) and the per-epoch training checkpoints."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlogit import _digest, paths
from jaxlogit.corrector._module import Corrector, init_params, module_from_params
from jaxlogit.errors import JaxlogitError

META = "meta.json"
PARAMS = "params"
_REBUILD = "rebuild it with `jaxlogit correct train ...` (it replaces the damaged one)"


def save(
    directory: str | os.PathLike, params: Any, meta: dict | None = None, *, module: Corrector | None = None
) -> None:
    """Saves a trained corrector: params with orbax, then ``meta.json`` (written last, atomically)
    with SHA-256 digests of the params files and of itself, which ``load`` verifies.

    Args:
      directory: where to save (created; an earlier corrector there is replaced).
      params: the corrector's params.
      meta: any JSON-serialisable facts to keep beside it (training config, accuracies).
      module: the ``Corrector``; by default it is read off the params' shapes and names (keep_prob 0.5).
    """
    directory = pathlib.Path(directory).absolute()
    module = module or module_from_params(params)
    paths.check_writable(directory)
    (directory / META).unlink(missing_ok=True)  # no meta (= no corrector) until the new params are whole
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(directory / PARAMS, jax.device_get(params), force=True)
    checkpointer.wait_until_finished()
    architecture = {"num_classes": module.num_classes, "hidden": module.hidden, "keep_prob": module.keep_prob}
    if module.depth != 1:  # depth 1 is written as before (a meta without "depth" means 1)
        architecture["depth"] = module.depth
    record = {
        "architecture": architecture,
        "meta": meta or {},
        "params_sha256": _digest.tree_sha256(directory / PARAMS),
    }
    paths.write_json_atomic(directory / META, _digest.with_json_sha256(record))


def load(directory: str | os.PathLike) -> tuple[Corrector, Any, dict]:
    """Loads what ``save`` wrote: ``(module, params, meta)``, params as numpy arrays.

    Raises:
      JaxlogitError: no saved corrector in ``directory``, or a damaged one (its files fail their
        SHA-256 check or cannot be read).
    """
    directory = pathlib.Path(directory).absolute()
    if not (directory / META).is_file():
        raise JaxlogitError(
            f"no corrector saved in {directory}; train one first (jaxlogit correct train ...)"
        )
    try:
        record = json.loads((directory / META).read_text())
        module = Corrector(**record["architecture"])  # no "depth": 1, as before depth existed
    except (ValueError, TypeError, KeyError, JaxlogitError) as err:
        raise _damaged(directory, f"{META} unreadable: {type(err).__name__}") from None
    if not _digest.json_intact(record):
        raise _damaged(directory, f"{META} fails its SHA-256 check")
    if "params_sha256" in record and _digest.tree_sha256(directory / PARAMS) != record["params_sha256"]:
        raise _damaged(directory, f"the files in {PARAMS}/ fail their SHA-256 check")
    target = jax.tree.map(np.asarray, init_params(module, key=jax.random.key(0)))
    try:
        params = ocp.StandardCheckpointer().restore(directory / PARAMS, target)
    except Exception as err:  # orbax raises many types; all mean "unusable checkpoint"
        if paths.filesystem_fault(err):
            raise
        raise _damaged(directory, type(err).__name__) from None
    return module, params, record["meta"]


def _damaged(directory: pathlib.Path, reason: str) -> JaxlogitError:
    return JaxlogitError(f"damaged corrector in {directory} ({reason}); {_REBUILD}")


class EpochCheckpoints:
    """Training checkpoints, one per epoch: a pytree of arrays plus a JSON record.

    The pytree is saved with orbax ``StandardSave``; the record (losses so far, held-out
    accuracies, the run's identity) with ``JsonSave``. orbax writes each step to a temporary
    directory and renames it when complete, so a killed run leaves only whole checkpoints.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self._manager = ocp.CheckpointManager(pathlib.Path(directory).absolute(), options=options)

    def latest_epoch(self) -> int | None:
        """The last epoch saved, or None."""
        return self._manager.latest_step()

    def save(self, epoch: int, tree: Any, record: dict) -> None:
        """Saves epoch ``epoch`` (asynchronously; ``close`` waits for it)."""
        args = ocp.args.Composite(tree=ocp.args.StandardSave(tree), record=ocp.args.JsonSave(record))
        self._manager.save(epoch, args=args)

    def restore(self, epoch: int, like: Any) -> tuple[Any, dict]:
        """``(tree, record)`` of ``epoch``; ``tree`` gets the structure, dtypes and shardings of ``like``."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        args = ocp.args.Composite(tree=ocp.args.StandardRestore(abstract), record=ocp.args.JsonRestore())
        restored = self._manager.restore(epoch, args=args)
        return restored["tree"], restored["record"]

    def record(self, epoch: int) -> dict:
        """Only the JSON record of ``epoch`` (cheap: no arrays are read)."""
        return self._manager.restore(epoch, args=ocp.args.Composite(record=ocp.args.JsonRestore()))["record"]

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
