"""The paper's pipeline as cached steps: backbone -> attack logits -> corrector.

Each step's artifact is cached under a folder named by the hash of its configuration, so
commands and experiments that need the same thing make it once. Steps know each other only
through their configs; the attack functions know no model and the corrector no images.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pathlib
import shutil
import sys
import typing
from collections.abc import Callable

import jax
import numpy as np

from jaxlogit import (
    _digest,
    _lock,
    _validate,
    _xla,
    attacks,
    batching,
    corrector,
    data,
    paths,
    store,
    training,
)
from jaxlogit import progress as progress_log
from jaxlogit.attacks._compile import split_logits_fn
from jaxlogit.errors import JaxlogitError

DEFAULT_ATTACK_BATCH = 250
"""Images per compiled attack call (``--attack-batch``). The attack key of a batch depends on its
start index, so PGD's and MIM's random starts, hence their stores, depend on it: a store made with
another batch is cached under a key of its own."""
DEFAULT_PREDICT_BATCH = training.DEFAULT_PREDICT_BATCH
"""Images per compiled call of clean predictions (``--predict-batch``); results do not depend on it."""


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """One registered attack (``jaxlogit.attacks.names()``) with its settings unless overridden.

    Attributes:
      name: a registered attack: pgd, mim, deepfool, cw or one added with ``attacks.register``.
      eps: budget of the attacks that take one (pgd, mim; ignored by the others).
      steps: iterations of pgd/mim/cw (None: the paper's 10/10/25).
      seed: root key of random starts.
    """

    name: str
    eps: float = 16 / 255
    steps: int | None = None
    seed: int = 0

    def __post_init__(self):
        spec = attacks.get(self.name)  # an unknown name is a one-line error listing the registered ones
        if spec.takes_eps and spec.norm == "linf":
            _validate.eps(self.eps, "--eps")
        elif spec.takes_eps:
            _validate.positive_number("--eps", self.eps)
        if self.steps is not None:
            _validate.positive_int("steps", self.steps)

    @property
    def spec(self) -> attacks.AttackSpec:
        """The registry's entry of this attack."""
        return attacks.get(self.name)

    @property
    def label(self) -> str:
        """Short name for tables: ``pgd@16/255``, ``cw``."""
        return self.spec.label(self.eps)


def run_attack(config: AttackConfig, logits_fn: Callable, x, y, *, key) -> attacks.AttackResult:
    """Runs ``config``'s attack on a batch with its registered settings (the paper's: SPEC.md)."""
    return config.spec.run(logits_fn, x, y, key=key, eps=config.eps, steps=config.steps)


# Compiled attack programs of this process, newest last: (logits_fn's static part, weight digest,
# attack, its registry entry) -> jitted ``(x, y, start) -> outputs``. A few only: each holds a
# backbone's weights.
_ATTACK_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_ATTACK_PROGRAMS = 4


def attack_program(logits_fn: jax.tree_util.Partial, attack: AttackConfig) -> Callable:
    """The compiled ``(x, y, start) -> (clean logits (B, C), adversarial logits (B, C), success (B,),
    norm (B,))`` of ``attack`` on the backbone ``logits_fn``, made once per process.

    The attack key of a batch is ``fold_in(key(attack.seed), start)``, ``start`` being the index of
    its first image in the store. The program is shared by every store of the same backbone
    (same function and weight values, whatever object holds them) and attack: another split or
    limit reuses it, and XLA compiles once per batch shape. The weights stay constants of the
    program, as they always were, so the values are those of every earlier release.
    """
    static, weights = split_logits_fn(logits_fn)
    weights_sha256 = _digest.arrays_sha256(jax.tree.leaves(weights))
    key = (static, weights_sha256, attack, attack.spec)  # a re-registered attack compiles anew
    if key in _ATTACK_PROGRAMS:
        _ATTACK_PROGRAMS.move_to_end(key)
        return _ATTACK_PROGRAMS[key]
    root_key = jax.random.key(attack.seed)

    @_xla.jit
    def attack_batch(x, y, start):
        res = run_attack(attack, logits_fn, x, y, key=jax.random.fold_in(root_key, start))
        return logits_fn(x), res.logits, res.success, res.norm

    _ATTACK_PROGRAMS[key] = attack_batch
    while len(_ATTACK_PROGRAMS) > _MAX_ATTACK_PROGRAMS:
        _ATTACK_PROGRAMS.popitem(last=False)
    return attack_batch


def _backbone_key(backbone: training.Backbone) -> dict:
    """What names a backbone in a cache key: its architecture, normalisation and weight digest
    (``Backbone.fingerprint``), never its folder: a copy of the weights elsewhere shares every artifact."""
    meta = backbone.meta
    return {
        "arch": meta.get("arch"),
        "mean": meta["mean"],
        "std": meta["std"],
        "weights": backbone.fingerprint,
    }


def store_dir(
    backbone: training.Backbone,
    attack: AttackConfig,
    split: data.Split,
    split_name: str,
    subset: int | str | None,
    cache: str | None,
    batch_size: int = DEFAULT_ATTACK_BATCH,
) -> pathlib.Path:
    """Cache folder of the logit store of ``backbone`` x ``attack`` on (a subset of) a split,
    attacked ``batch_size`` images at a time (keyed only when not the default).

    Keyed by the weights (``Backbone.fingerprint``), the data (``split.fingerprint``), the attack,
    the split's name and the subset: other weights or other data never reuse a store.
    """
    config = {
        "backbone": _backbone_key(backbone),
        "data": split.fingerprint,
        "attack": dataclasses.asdict(attack),
        "split": split_name,
        "limit": subset,
        **_batch_key(batch_size),
    }
    return paths.artifact_dir("logits", f"{backbone.meta['arch']}-{attack.name}-{split_name}", config, cache)


def _batch_key(batch_size: int) -> dict:
    """The attack batch as a part of a store's key: empty for the default (whose keys predate it)."""
    return {} if batch_size == DEFAULT_ATTACK_BATCH else {"attack_batch": batch_size}


def ensure_logits(
    backbone: training.Backbone,
    attack: AttackConfig,
    split: data.ArraySplit,
    split_name: str,
    *,
    limit: int | None = None,
    indices: np.ndarray | None = None,
    batch_size: int = DEFAULT_ATTACK_BATCH,
    cache: str | None = None,
    progress: bool = True,
) -> store.LogitStore:
    """Clean and adversarial logits of the first ``limit`` images of ``split`` (all if None),
    or of the images at ``indices`` (e.g. the selected set; row i is image ``indices[i]``).

    Streams shard by shard and resumes after a crash (``jaxlogit.store``). The attack key
    of a batch depends only on its start index, so a resumed store equals an uninterrupted one;
    ``batch_size`` images are attacked at a time (another than the default makes another store).
    """
    _validate.positive_int("--attack-batch", batch_size)
    if indices is None:
        indices = np.arange(len(split) if limit is None else min(limit, len(split)))
        subset = limit
    else:
        indices = np.asarray(indices)
        subset = f"indices-{paths.config_hash({'indices': indices.tolist()})}"
    n = len(indices)
    directory = store_dir(backbone, attack, split, split_name, subset, cache, batch_size)
    attack_batch = attack_program(backbone.logits_fn(), attack)

    def produce(start: int, stop: int) -> dict:
        parts = []
        for begin in range(start, stop, batch_size):
            end = min(begin + batch_size, stop)
            x, y = split.get_batch(indices[begin:end])
            rows = min(batch_size, n)  # never pad a small store up to a large batch
            out = attack_batch(batching.pad_to(x, rows), batching.pad_to(y, rows), begin)
            parts.append([np.asarray(o)[: end - begin] for o in out])
            progress_log.partial(end - begin)
        clean, adv, success, norm = (np.concatenate(p) for p in zip(*parts))
        y = np.asarray(split.labels)[indices[start:stop]]
        return {
            "clean_logits": clean.astype(np.float32),
            "adv_logits": adv.astype(np.float32),
            "labels": y.astype(np.int32),
            "success": success.astype(bool),
            "norm": norm.astype(np.float32),
        }

    config = {
        "backbone": _backbone_key(backbone),
        "data": split.fingerprint,
        "attack": dataclasses.asdict(attack),
        "split": split_name,
        "subset": subset,
        "num_items": n,
        **_batch_key(batch_size),
    }
    return store.build(directory, n, produce, shard_size=batch_size * 8, config=config, progress=progress)


@dataclasses.dataclass(frozen=True)
class CorrectorConfig:
    """How a corrector is trained (Algorithm 1). Paper: hidden 10,000, lr 5e-5, 50 epochs.

    Attributes:
      hidden: D, or None for the single-layer C -> C ablation.
      epochs: passes over the training logits.
      batch_size: global batch, split over all devices.
      lr: Adam learning rate.
      weight_decay: coupled L2 (torch ``Adam(weight_decay=...)``).
      p_clean: probability of taking the clean logits of an example.
      holdout_fraction: share of the *training* logits held out for model selection.
      seed: root key.
    """

    hidden: int | None = 10_000
    epochs: int = 50
    batch_size: int = 256
    lr: float = 5e-5
    weight_decay: float = 1e-4
    p_clean: float = 0.3
    holdout_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.hidden is not None and (
            isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1
        ):
            raise JaxlogitError(
                f"--hidden={self.hidden!r}: pass a width >= 1, or 0 for the single-layer corrector"
            )
        _validate.positive_int("--epochs", self.epochs)
        _validate.positive_int("batch_size", self.batch_size)
        _validate.positive_number("--lr", self.lr)
        _validate.number_in("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True)
        _validate.number_in("p_clean", self.p_clean, 0.0, 1.0)
        _validate.number_in("holdout_fraction", self.holdout_fraction, 0.0, 1.0, high_open=True)


# The embedded default (Fashion-MNIST): the corrector learns from the logits of the first
# 4,000 training images, Adam lr 1e-3 for 150 epochs, the best epoch picked on held-out
# training logits (deviations from the paper: experiments/table1.py). The CLI and the
# experiments share these, so they share caches.
DEFAULT_TRAIN_LIMIT = 4000
DEFAULT_CORRECTOR = CorrectorConfig(epochs=150, lr=1e-3)


class TrainedCorrector(typing.NamedTuple):
    """A trained corrector: ``g`` maps logits (B, C) -> corrected logits (B, C)."""

    module: object
    params: dict
    meta: dict
    directory: pathlib.Path

    def g_fn(self) -> jax.tree_util.Partial:
        """The eval-mode corrector ``corrector.eval_fn`` (dropout off, params traced)."""
        return corrector.eval_fn(self.module, self.params)

    def predict_classes(self, logits: np.ndarray) -> np.ndarray:
        """Corrected classes (N,) of logits (N, C)."""
        return np.argmax(corrector.corrected_logits(self.params, self.module, logits), axis=-1)


def fitting_batch(config: CorrectorConfig, rows: int) -> CorrectorConfig:
    """``config``, its batch lowered to the training rows left after the holdout (a multiple of
    the device count) when they are fewer than one batch, as on a tiny subset; else unchanged."""
    held = 0 if config.holdout_fraction == 0 else max(1, round(config.holdout_fraction * rows))
    devices = jax.device_count()
    fit = (rows - held) // devices * devices
    if config.batch_size <= rows - held or fit < 1:
        return config
    return dataclasses.replace(config, batch_size=fit)


def ensure_corrector(
    train_logits: store.LogitStore,
    config: CorrectorConfig,
    *,
    cache: str | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> TrainedCorrector:
    """The corrector trained with ``config`` on ``train_logits`` (cached; resumes after a crash).

    One process trains it; another that asks for it meanwhile waits, then loads it. With
    ``rebuild``, a damaged cached corrector is trained again (else it is a ``JaxlogitError``).
    """
    key_config = {"logits": train_logits.directory.name, "corrector": dataclasses.asdict(config)}
    directory = paths.artifact_dir(
        "correctors", train_logits.directory.name.rsplit("-", 1)[0], key_config, cache
    )
    cached = _cached_corrector(directory, rebuild)
    if cached is not None:
        return cached
    paths.check_writable(directory.parent)
    with _lock.exclusive(directory):
        cached = _cached_corrector(directory, rebuild)  # made by the process we waited for
        return cached if cached is not None else _train_corrector(train_logits, config, directory, progress)


def _cached_corrector(directory: pathlib.Path, rebuild: bool) -> TrainedCorrector | None:
    """The corrector saved in ``directory``; None if there is none, or if it is damaged and ``rebuild``."""
    if not (directory / "meta.json").exists():
        return None
    try:
        module, params, meta = corrector.load(directory)
    except JaxlogitError as err:
        if not rebuild:
            raise
        print(f"warning: {str(err).split(';')[0]}; training it again", file=sys.stderr)
        return None
    return TrainedCorrector(module, params, meta, directory)


def _train_corrector(
    train_logits: store.LogitStore, config: CorrectorConfig, directory: pathlib.Path, progress: bool
) -> TrainedCorrector:
    """Trains the corrector of ``config`` and saves it in ``directory``."""
    num_classes = int(train_logits["clean_logits"].shape[1])
    result = corrector.train(
        train_logits,
        num_classes=num_classes,
        hidden=config.hidden,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        p_clean=config.p_clean,
        key=jax.random.key(config.seed),
        checkpoint_dir=directory.with_name(directory.name + ".train"),
        resume=True,
        holdout_fraction=config.holdout_fraction,
        progress=progress,
    )
    meta = {
        "config": dataclasses.asdict(config),
        "logits": str(train_logits.directory),
        "best_epoch": int(result.best_epoch),
        "holdout_accuracy": [float(a) for a in result.holdout_accuracy],
    }
    corrector.save(directory, result.params, meta, module=result.module)
    shutil.rmtree(
        directory.with_name(directory.name + ".train"), ignore_errors=True
    )  # epochs no longer needed
    module, params, meta = corrector.load(directory)
    return TrainedCorrector(module, params, meta, directory)


def selected_indices(
    backbone: training.Backbone,
    split: data.ArraySplit,
    *,
    per_class: int,
    limit: int | None = None,
    cache: str | None = None,
    batch_size: int = DEFAULT_PREDICT_BATCH,
) -> np.ndarray:
    """The paper's *selected* set: the first ``per_class`` images per class that ``backbone``
    classifies correctly, among the first ``limit`` images of ``split`` (all if None). Cached.

    The backbone predicts ``batch_size`` images at a time (the result does not depend on it).

    Returns:
      int indices into ``split``, sorted, shape ``(<= per_class * C,)``.
    """
    _validate.positive_int("--predict-batch", batch_size)
    config = {
        "backbone": _backbone_key(backbone),
        "data": split.fingerprint,
        "per_class": per_class,
        "limit": limit,
    }
    directory = paths.artifact_dir("selected", backbone.meta["arch"], config, cache)
    cached = directory / "indices.npy"
    if cached.exists():
        return np.load(cached)
    preds = training.predict_classes(backbone.logits_fn(), split, batch_size=batch_size)
    labels = split.labels
    if limit is not None:
        preds, labels = preds[:limit], labels[:limit]
    indices = data.selected_indices(preds, labels, per_class)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = paths.temporary_sibling(cached)  # a name of this writer's own
    with open(tmp, "wb") as f:
        np.save(f, indices)
    tmp.replace(cached)
    return indices


def selected_logits(
    backbone: training.Backbone,
    attack: AttackConfig,
    split: data.ArraySplit,
    split_name: str,
    indices: np.ndarray,
    *,
    limit: int | None = None,
    cache: str | None = None,
    progress: bool = True,
    batch_size: int = DEFAULT_ATTACK_BATCH,
) -> dict[str, np.ndarray]:
    """The logit-store arrays of the images at ``indices`` (e.g. the selected set) under ``attack``.

    Sliced from the complete store of the first ``limit`` images if one is cached, else the
    attack runs on those images only (a store of its own), ``batch_size`` at a time. Row i is
    image ``indices[i]``.
    """
    full_dir = store_dir(backbone, attack, split, split_name, limit, cache, batch_size)
    if store.is_complete(full_dir):
        full = store.open(full_dir)
        return {k: np.asarray(full[k])[indices] for k in full.keys()}
    sel = ensure_logits(
        backbone,
        attack,
        split,
        split_name,
        indices=indices,
        batch_size=batch_size,
        cache=cache,
        progress=progress,
    )
    return {k: np.asarray(sel[k]) for k in sel.keys()}


def corrector_for_attack(
    backbone: training.Backbone,
    attack: AttackConfig,
    train_split: data.ArraySplit,
    config: CorrectorConfig,
    *,
    limit: int | None,
    cache: str | None = None,
    progress: bool = True,
    batch_size: int = DEFAULT_ATTACK_BATCH,
) -> TrainedCorrector:
    """The corrector trained on ``attack``'s logits of the first ``limit`` images of ``train_split``.

    Cached: the same store and corrector as ``experiments._common.corrector_for`` with the same
    ``limit`` and ``config`` (library code for the CLI, which must not import ``experiments``);
    ``batch_size`` images are attacked at a time.
    """
    train_store = ensure_logits(
        backbone,
        attack,
        train_split,
        "train",
        limit=limit,
        batch_size=batch_size,
        cache=cache,
        progress=progress,
    )
    return ensure_corrector(
        train_store, fitting_batch(config, len(train_store)), cache=cache, progress=progress
    )
