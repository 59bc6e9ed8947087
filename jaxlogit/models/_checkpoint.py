"""Backbone checkpoints: an orbax checkpoint of the variables plus ``meta.json``, atomically."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import uuid
from typing import NamedTuple

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from jaxlogit import _digest, paths
from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _registry

STATE_DIR = "state"
META_FILE = "meta.json"
FORMAT_VERSION = 1
_RECREATE = (
    "rebuild it with `jaxlogit backbone train` (a cached backbone; it replaces the damaged one) "
    "or `jaxlogit convert --force` (a converted one)"
)


def save_checkpoint(
    directory: str | os.PathLike, name: str, variables: dict, meta: dict | None = None
) -> pathlib.Path:
    """Write ``variables`` of model ``name`` to ``directory`` (replaced atomically).

    ``directory/state`` is an orbax ``StandardCheckpointer`` checkpoint; ``directory/meta.json``
    holds ``arch``, ``num_classes``, ``mean``, ``std``, ``input_shape`` (the spec's unless
    ``meta`` overrides them) and everything else in ``meta``, plus SHA-256 digests of the state
    files and of meta itself that ``load_checkpoint`` verifies. Both are written to a temporary
    sibling folder first, then renamed into place: readers never see half a checkpoint. An
    existing ``directory`` is replaced only if it holds a checkpoint of the same model.

    Raises:
        JaxlogitError: ``name`` is unknown, ``variables`` do not fit its architecture, or
          ``directory`` is a file, a folder holding other things, or not writable.

    Returns:
        The checkpoint directory.
    """
    directory = pathlib.Path(directory).expanduser().absolute()
    model_spec = _registry.spec(name)
    full_meta = {
        "mean": list(model_spec.mean),
        "std": list(model_spec.std),
        "input_shape": list(model_spec.input_shape),
        "num_classes": model_spec.num_classes,
        **(meta or {}),
        "arch": name,
        "format_version": FORMAT_VERSION,
    }
    module = _registry.create(name, full_meta["num_classes"])
    _check_fits(variables, _registry.variable_shapes(module, tuple(full_meta["input_shape"])), name)
    check_target(directory, name, force=True)
    paths.check_writable(directory.parent, "folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(tmp / STATE_DIR, variables)
            checkpointer.wait_until_finished()
        full_meta["state_sha256"] = _digest.tree_sha256(tmp / STATE_DIR)
        paths.write_json_atomic(tmp / META_FILE, _digest.with_json_sha256(full_meta))
        _replace_dir(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_checkpoint(directory: str | os.PathLike) -> tuple[nn.Module, dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(module, variables, meta)``: the flax module, its variables (jax arrays) and meta.

    Raises:
        JaxlogitError: the checkpoint is missing or corrupt (names the directory and the fix).
    """
    directory = pathlib.Path(directory).expanduser().absolute()
    meta = _read_meta(directory)
    if "state_sha256" in meta and _digest.tree_sha256(directory / STATE_DIR) != meta["state_sha256"]:
        raise _corrupt(directory, f"the files in {STATE_DIR}/ fail their SHA-256 check")
    try:
        module = _registry.create(meta["arch"], int(meta["num_classes"]))
        target = _registry.variable_shapes(module, tuple(meta["input_shape"]))
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(directory / STATE_DIR, target)
    except Exception as err:  # orbax raises many types; all mean "unusable checkpoint"
        raise _corrupt(directory, err) from err
    return module, dict(variables), meta


def _read_meta(directory: pathlib.Path) -> dict:
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise JaxlogitError(f"no checkpoint in {directory} ({META_FILE} missing); {_RECREATE}")
    try:
        meta = json.loads(meta_path.read_text())
        missing = {"arch", "num_classes", "input_shape"} - set(meta)
    except (ValueError, TypeError) as err:
        raise _corrupt(directory, err) from err
    if not _digest.json_intact(meta):
        raise _corrupt(directory, f"{META_FILE} fails its SHA-256 check")
    if missing:
        raise _corrupt(directory, f"{META_FILE} lacks {sorted(missing)}")
    return meta


def _corrupt(directory: pathlib.Path, reason: object) -> JaxlogitError:
    first_line = (str(reason).strip().splitlines() or [type(reason).__name__])[0][:200]
    return JaxlogitError(f"corrupt checkpoint in {directory} ({first_line}); {_RECREATE}")


def _holds_checkpoint(directory: pathlib.Path) -> bool:
    """Whether ``directory`` holds nothing but a checkpoint's ``meta.json`` and ``state/``."""
    names = {p.name for p in directory.iterdir()}
    return bool(names) and names <= {META_FILE, STATE_DIR}


def _stored_arch(directory: pathlib.Path) -> str | None:
    """The ``arch`` in ``directory/meta.json``, or None when it cannot be read (damaged)."""
    try:
        return json.loads((directory / META_FILE).read_text()).get("arch")
    except (OSError, ValueError, AttributeError):
        return None


def check_target(directory: str | os.PathLike, name: str, *, force: bool) -> None:
    """Raises unless a checkpoint of model ``name`` may be written to ``directory``.

    Allowed: a missing path, an empty folder, or (only with ``force``) a folder holding a
    checkpoint of ``name`` or a damaged one. Never a file, a folder holding anything else, or
    another model's checkpoint: nothing that jaxlogit did not write is ever replaced.
    """
    directory = pathlib.Path(directory).expanduser().absolute()
    if not directory.exists() and not directory.is_symlink():
        return
    if not directory.is_dir():
        raise JaxlogitError(
            f"{directory} is a file: choose a folder path for the checkpoint (the file is kept)"
        )
    if not any(directory.iterdir()):
        return
    if not _holds_checkpoint(directory):
        raise JaxlogitError(
            f"{directory} is not empty and holds no jaxlogit checkpoint: choose a new or "
            "empty folder (nothing in it is deleted)"
        )
    arch = _stored_arch(directory)
    if arch not in (None, name):
        raise JaxlogitError(f"{directory} holds a {arch} checkpoint, not {name}: choose another folder")
    if not force:
        raise JaxlogitError(
            f"{directory} already holds a {arch or 'damaged'} checkpoint: pass --force to replace it"
        )


def _check_fits(variables: dict, expected: dict, name: str) -> None:
    """Raise unless ``variables`` has exactly the structure and shapes of ``expected``."""
    got = jax.tree.map(lambda a: tuple(a.shape), variables)
    want = jax.tree.map(lambda a: tuple(a.shape), expected)
    if got != want:
        raise JaxlogitError(
            f"variables do not fit model {name!r}: create them with "
            f"models.create({name!r}, num_classes=...) and pass the same "
            "num_classes in meta"
        )


def _replace_dir(source: pathlib.Path, target: pathlib.Path) -> None:
    """Move ``source`` to ``target``, replacing an existing ``target`` with two renames."""
    if not target.exists():
        os.replace(source, target)
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


# A weight digest given at conversion wins over the digest of the saved state files.
DIGEST_KEYS = ("weights_sha256", "state_sha256")


def recorded_digest(meta: dict) -> str | None:
    """The weight digest ``meta`` records (``weights_sha256``, else ``state_sha256``), or None."""
    return next((str(meta[k]) for k in DIGEST_KEYS if meta.get(k)), None)


class CheckpointSummary(NamedTuple):
    """What ``jaxlogit info`` says about one checkpoint, read without loading its arrays.

    Attributes:
      directory: the checkpoint folder.
      arch: the architecture in ``meta.json``.
      num_classes: its classes.
      digest: the weight digest recorded in ``meta.json``, else the sha256 of the files under
        ``state/`` (paths and bytes, in sorted order), else None.
      digest_origin: ``"meta"``, ``"computed"`` or ``"none"``.
      source: the file it was converted from (``meta["source"]``), or None.
    """

    directory: pathlib.Path
    arch: str
    num_classes: int
    digest: str | None
    digest_origin: str
    source: str | None


def state_sha256(directory: pathlib.Path) -> str | None:
    """SHA-256 of the files under ``directory/state`` (``_digest.tree_sha256``), or None if empty."""
    state = directory / STATE_DIR
    if not state.is_dir() or not any(p.is_file() for p in state.rglob("*")):
        return None
    return _digest.tree_sha256(state)


def summarize_checkpoint(directory: str | os.PathLike) -> CheckpointSummary:
    """Arch, classes, digest and source of the checkpoint in ``directory`` (its meta, not its arrays).

    Raises:
      JaxlogitError: ``directory`` holds no readable ``meta.json``.
    """
    directory = pathlib.Path(directory).expanduser().absolute()
    meta = _read_meta(directory)
    recorded = recorded_digest(meta)
    digest = recorded or state_sha256(directory)
    origin = "meta" if recorded else ("computed" if digest else "none")
    return CheckpointSummary(
        directory, str(meta["arch"]), int(meta["num_classes"]), digest, origin, meta.get("source")
    )


def find_checkpoints(weights_dir: str | os.PathLike) -> list[pathlib.Path]:
    """The checkpoint folders in ``weights_dir``: itself if it is one, else its sub-folders that are."""
    root = pathlib.Path(weights_dir).expanduser()
    if (root / META_FILE).is_file():
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / META_FILE).is_file())
