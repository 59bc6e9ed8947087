"""The paper's pipeline as cached steps: backbone -> attack logits -> corrector.

Each step's artifact is cached under a folder named by the hash of its configuration, so
commands and experiments that need the same thing make it once. Steps know each other only
through their configs; the attack functions know no model and the corrector no images.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
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
    _mesh,
    _validate,
    _xla,
    attacks,
    batch_fit,
    batching,
    corrector,
    data,
    distributed,
    paths,
    store,
    training,
)
from jaxlogit import progress as progress_log
from jaxlogit.attacks._compile import split_logits_fn
from jaxlogit.errors import JaxlogitError

DEFAULT_ATTACK_BATCH = 250
"""The most images per device per compiled attack call that ``--attack-batch auto`` (the default)
picks: the largest batch up to this one that fits the device (:func:`attack_batch_size`). A call
attacks this many times the device count. Speed and memory only: each image's attack key is
``fold_in(key(seed), its index in the split)``, so a store does not depend on the batch or the devices
it was attacked with (nor is it keyed by them)."""
AUTO = batch_fit.AUTO
SHARD_ROWS = 2000
"""Rows per shard of a new logit store, whatever the batch or the devices (an existing store keeps its
own); on several processes each process writes whole shards."""
ATTACK_KEYS = "image-index"
"""How attack keys are drawn, part of every store's key: stores made when a batch's key depended on
its start index (before per-image keys) are never reused."""
DEFAULT_PREDICT_BATCH = training.DEFAULT_PREDICT_BATCH
"""The most images per compiled call of clean predictions that ``--predict-batch auto`` (the
default) picks (``training.predict_batch_size``); results do not depend on it."""


@dataclasses.dataclass(frozen=True)
class AttackConfig:
    """One registered attack (``jaxlogit.attacks.names()``) with its settings unless overridden.

    Attributes:
      name: a registered attack: pgd, mim, deepfool, cw or one added with ``attacks.register``.
      eps: budget of the attacks that take one (pgd, mim; ignored by the others).
      steps: iterations of pgd/mim/cw (None: the paper's 10/10/25).
      seed: root key of random starts.
      lr: learning rate of an attack that has one (``spec.tunable``: cw; None: the paper's 0.01).
    """

    name: str
    eps: float = 16 / 255
    steps: int | None = None
    seed: int = 0
    lr: float | None = None

    def __post_init__(self):
        spec = attacks.get(self.name)  # an unknown name is a one-line error listing the registered ones
        if spec.takes_eps and spec.norm == "linf":
            _validate.eps(self.eps, "--eps")
        elif spec.takes_eps:
            _validate.positive_number("--eps", self.eps)
        if self.steps is not None:
            _validate.positive_int("steps", self.steps)
        if self.lr is not None:
            _validate.positive_number("lr", self.lr)
            if "lr" not in spec.tunable:
                raise JaxlogitError(
                    f"attack {self.name!r} takes no lr: leave it None (attacks with one: {_tunable('lr')})"
                )

    @property
    def spec(self) -> attacks.AttackSpec:
        """The registry's entry of this attack."""
        return attacks.get(self.name)

    @property
    def label(self) -> str:
        """Short name for tables: ``pgd@16/255``, ``cw``, ``cw lr=0.05 steps=50`` (overrides shown)."""
        overrides = [f"{name}={value:g}" for name, value in self._overrides().items()]
        return " ".join([self.spec.label(self.eps), *overrides])

    def _overrides(self) -> dict:
        """The settings this config overrides: ``lr`` and ``steps`` when not None."""
        return {name: getattr(self, name) for name in ("lr", "steps") if getattr(self, name) is not None}

    def cache_key(self) -> dict:
        """The config as part of a cache key: its fields, without ``lr`` when None (keys predate it)."""
        fields = dataclasses.asdict(self)
        return {k: v for k, v in fields.items() if k != "lr" or v is not None}


def _tunable(setting: str) -> str:
    """The registered attacks that take ``setting``, for error messages."""
    return ", ".join(n for n in attacks.names() if setting in attacks.get(n).tunable) or "none"


def run_attack(config: AttackConfig, logits_fn: Callable, x, y, *, key) -> attacks.AttackResult:
    """Runs ``config``'s attack on a batch with its registered settings (the paper's: SPEC.md),
    ``steps`` and ``lr`` overridden where the config sets them."""
    extra = {} if config.lr is None else {"lr": config.lr}
    return config.spec.run(logits_fn, x, y, key=key, eps=config.eps, steps=config.steps, **extra)


# Compiled attack programs of this process, newest last: (logits_fn's static part, weight digest,
# attack, its registry entry, mesh) -> jitted ``(x, y, ids) -> outputs``. A few only: each holds a
# backbone's weights.
_ATTACK_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_ATTACK_PROGRAMS = 4


def attack_program(
    logits_fn: jax.tree_util.Partial, attack: AttackConfig, mesh: jax.sharding.Mesh | None = None
) -> Callable:
    """The compiled ``(x (B, H, W, C), y (B,), ids (B,)) -> (clean logits (B, C), adversarial logits
    (B, C), success (B,), norm (B,))`` of ``attack`` on the backbone ``logits_fn``, made once per process.

    It runs over ``mesh`` (default: this process's devices, ``_mesh.data_mesh(jax.local_devices())``):
    B must be a multiple of its device count, each device attacking its own B / devices rows with
    the program one device runs on that many rows (``_mesh.over_rows``); the outputs come back split
    over the devices.

    Image i's attack key is ``fold_in(key(attack.seed), ids[i])``, ``ids`` being the images'
    indices in their split: a row depends only on its image, never on the batch it is in. The
    program is shared by every store of the same backbone (same function and weight values,
    whatever object holds them) and attack: another split or limit reuses it, and XLA compiles
    once per batch shape. The weights stay constants of the program, as they always were.
    """
    static, weights = split_logits_fn(logits_fn)
    weights_sha256 = _digest.arrays_sha256(jax.tree.leaves(weights))
    mesh = _mesh.data_mesh(jax.local_devices()) if mesh is None else mesh
    key = (static, weights_sha256, attack, attack.spec, mesh)  # a re-registered attack compiles anew
    if key in _ATTACK_PROGRAMS:
        _ATTACK_PROGRAMS.move_to_end(key)
        return _ATTACK_PROGRAMS[key]
    _ATTACK_PROGRAMS[key] = _mesh.over_rows(_attack_fn(logits_fn, attack), mesh)
    while len(_ATTACK_PROGRAMS) > _MAX_ATTACK_PROGRAMS:
        _ATTACK_PROGRAMS.popitem(last=False)
    return _ATTACK_PROGRAMS[key]


def _attack_fn(logits_fn: Callable, attack: AttackConfig) -> Callable:
    """The per-device ``(x (B, H, W, C), y (B,), ids (B,)) -> (clean logits, adversarial logits,
    success, norm)`` of ``attack``, image i keyed by ``fold_in(key(attack.seed), ids[i])``."""
    root_key = jax.random.key(attack.seed)

    def attack_batch(x, y, ids):
        res = run_attack(attack, logits_fn, x, y, key=attacks.sample_keys(root_key, ids))
        return logits_fn(x), res.logits, res.success, res.norm

    return attack_batch


def one_device_program(logits_fn: Callable, attack: AttackConfig) -> Callable:
    """The jitted program one device runs on its rows of an :func:`attack_program` call (what
    XLA's memory analysis and the batch sizing look at)."""
    return _xla.jit(_attack_fn(logits_fn, attack))


class SplitAttack(typing.NamedTuple):
    """:func:`attack_split`'s per-image outputs, numpy, N rows each; ``images`` only when kept."""

    labels: np.ndarray  # (N,) int32
    clean_logits: np.ndarray  # (N, C)
    adv_logits: np.ndarray  # (N, C)
    success: np.ndarray  # (N,) bool
    norm: np.ndarray  # (N,)
    images: np.ndarray | None  # (N, H, W, C) or None


def attack_split(
    logits_fn: jax.tree_util.Partial,
    attack: AttackConfig,
    split: data.Split,
    num_images: int,
    *,
    batch_size: int = DEFAULT_ATTACK_BATCH,
    workers: int | None = None,
    keep_images: bool = False,
) -> SplitAttack:
    """``attack`` on the first ``num_images`` images of ``split``, streamed: each call's images are
    decoded (by ``workers``), attacked as a logit store attacks them (the same rows, image i keyed by i) and
    dropped, so memory holds the per-image outputs only (and the images if ``keep_images``)."""
    mesh = _mesh.data_mesh(jax.local_devices())
    program = attack_program(logits_fn, attack, mesh)
    rows = _mesh.global_rows(_mesh.unpadded_per_device(batch_size, num_images, mesh), mesh)  # as a store's
    ids = np.arange(num_images)
    labels, outputs, images = [], [], []
    with data.iter_batches(split, ids, rows, workers=workers) as read:
        for start, (x, y) in zip(range(0, num_images, rows), read):
            outputs.append(batching.map_batches(program, x, y, ids[start : start + len(y)], batch_size=rows))
            labels.append(y)
            images.extend([x] if keep_images else [])
    clean, adv, success, norm = (np.concatenate(parts) for parts in zip(*outputs))
    kept = np.concatenate(images) if keep_images else None
    return SplitAttack(np.concatenate(labels), clean, adv, success, norm, kept)


# XLA's memory line of attack programs, per (static part, weight shapes, attack, image shape).
_MEMORY_FITS: dict = {}
# The attack batches this process chose, ``{"ARCH ATTACK HxW": batch}`` (the experiments' reports).
CHOSEN_BATCHES: dict[str, int] = {}


def _attack_specs(batch: int, image_shape: tuple[int, ...]) -> tuple:
    """Abstract ``(x, y, ids)`` of a one-device attack program call on ``batch`` images."""
    return (
        jax.ShapeDtypeStruct((batch, *image_shape), np.float32),
        jax.ShapeDtypeStruct((batch,), np.int32),
        jax.ShapeDtypeStruct((batch,), np.int32),
    )


def _program_jaxpr(program: Callable, image_shape: tuple[int, ...], batch: int):
    """The traced jaxpr of a one-device attack program on ``batch`` images."""
    return program.trace(*_attack_specs(batch, image_shape)).jaxpr


def attack_memory_fit(
    logits_fn: jax.tree_util.Partial, attack: AttackConfig, image_shape: tuple[int, ...]
) -> batch_fit.MemoryFit:
    """Peak bytes of :func:`attack_program` as ``fixed + per_image x B`` on images ``image_shape``
    (H, W, C): XLA's memory analysis of the program compiled (not run) for two probe batches,
    the weights it holds as constants added to ``fixed``. Once per process per backbone shape."""
    static, weights = split_logits_fn(logits_fn)
    leaves = jax.tree.leaves(weights)
    key = (static, tuple((np.shape(w), str(np.asarray(w).dtype)) for w in leaves), attack, attack.spec)
    key += (tuple(image_shape),)
    if key not in _MEMORY_FITS:
        program = one_device_program(logits_fn, attack)
        fit = batch_fit.probe_fit(lambda b: program.lower(*_attack_specs(b, image_shape)).compile())
        weight_bytes = sum(int(np.asarray(w).nbytes) for w in leaves)
        _MEMORY_FITS[key] = fit._replace(fixed_bytes=fit.fixed_bytes + weight_bytes)
    return _MEMORY_FITS[key]


def attack_batch_size(
    requested: int | str,
    logits_fn: jax.tree_util.Partial,
    attack: AttackConfig,
    image_shape: tuple[int, ...],
    *,
    arch: str = "the backbone",
    cap: int = DEFAULT_ATTACK_BATCH,
    trace_for: Callable[[int], object] | None = None,
    free_bytes: int | None = None,
) -> int:
    """The images per attack call to run: ``requested`` (``AUTO`` or an int >= 1) checked
    against the device's free memory (``batch_fit.choose``; ``AUTO``: the largest up to ``cap``
    that fits).

    Args:
      arch: the backbone's name, for messages.
      trace_for: ``batch -> ClosedJaxpr`` of the program that will run (its trace is reused by
        the call that follows), for the cheap bound; default: :func:`attack_program`'s.
      free_bytes: free memory in bytes (None: ``batch_fit.free_memory_bytes()``).

    Raises:
      JaxlogitError: an explicit batch that does not fit (the message names one that does).
    """
    if requested != AUTO:
        _validate.positive_int("--attack-batch", requested)
    if trace_for is None:
        trace_for = functools.partial(_program_jaxpr, one_device_program(logits_fn, attack), image_shape)
    height, width = image_shape[:2]
    request = batch_fit.Request(
        option="--attack-batch",
        what=f"{arch} {attack.name} at {height}x{width}",
        bound=lambda b: batch_fit.jaxpr_bound_bytes(trace_for(b)),
        fit=lambda: attack_memory_fit(logits_fn, attack, image_shape),
    )
    if free_bytes is None:
        free_bytes = batch_fit.free_memory_bytes()
    return batch_fit.choose(request, requested, cap, free_bytes)


def batch_cap(num_rows: int, mesh: jax.sharding.Mesh | None = None) -> int:
    """The largest attack batch per device ``AUTO`` picks for ``num_rows`` images on ``mesh``
    (default: this process's devices): ``DEFAULT_ATTACK_BATCH``, or fewer when the rows would not
    fill one call (a few images compile a small program, never one of 250 rows; at least 8, as
    ``_mesh.unpadded_per_device``)."""
    mesh = _mesh.data_mesh(jax.local_devices()) if mesh is None else mesh
    return _mesh.unpadded_per_device(DEFAULT_ATTACK_BATCH, num_rows, mesh)


def _resolved_batch(
    requested: int | str,
    backbone: training.Backbone,
    attack: AttackConfig,
    image_shape: tuple[int, ...],
    complete: bool,
    *,
    cap: int = DEFAULT_ATTACK_BATCH,
) -> int:
    """:func:`attack_batch_size` for a store (``AUTO``: at most ``cap``, the rows a device attacks
    at most), unless the store is ``complete`` (nothing will be attacked: a cached run traces and
    compiles nothing; the batch changes no value)."""
    if requested != AUTO:
        _validate.positive_int("--attack-batch", requested)
    arch = backbone.meta.get("arch", "the backbone")
    label = f"{arch} {attack.name} {image_shape[0]}x{image_shape[1]}"
    if complete:
        batch = DEFAULT_ATTACK_BATCH if requested == AUTO else requested
    else:
        batch = attack_batch_size(requested, backbone.logits_fn(), attack, image_shape, arch=arch, cap=cap)
    CHOSEN_BATCHES[label] = batch
    return batch


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
) -> pathlib.Path:
    """Cache folder of the logit store of ``backbone`` x ``attack`` on (a subset of) a split.

    Keyed by the weights (``Backbone.fingerprint``), the data (``split.fingerprint``), the attack,
    the split's name, the subset and ``ATTACK_KEYS``: other weights or other data never reuse a
    store. Not by the attack batch, which changes no value.
    """
    config = {
        "backbone": _backbone_key(backbone),
        "data": split.fingerprint,
        "attack": attack.cache_key(),
        "split": split_name,
        "limit": subset,
        "attack_keys": ATTACK_KEYS,
    }
    return paths.artifact_dir("logits", f"{backbone.meta['arch']}-{attack.name}-{split_name}", config, cache)


def _attack_rows(program: Callable, x: np.ndarray, y: np.ndarray, ids: np.ndarray, rows: int) -> list:
    """``program``'s outputs (numpy, n rows each) on n <= ``rows`` images ``x`` (n, H, W, C) with
    labels ``y`` (n,) and split indices ``ids`` (n,), padded to ``rows`` (the global batch: the
    attack batch on each device of the program's mesh)."""
    out = program(*(batching.pad_to(a, rows) for a in (x, y, ids)))
    return [np.asarray(o)[: len(ids)] for o in out]


def ensure_logits(
    backbone: training.Backbone,
    attack: AttackConfig,
    split: data.ArraySplit,
    split_name: str,
    *,
    limit: int | None = None,
    indices: np.ndarray | None = None,
    batch_size: int | str = AUTO,
    cache: str | None = None,
    progress: bool = True,
    data_workers: int | None = None,
) -> store.LogitStore:
    """Clean and adversarial logits of the first ``limit`` images of ``split`` (all if None),
    or of the images at ``indices`` (e.g. the selected set; row i is image ``indices[i]``).

    Streams shard by shard and resumes after a crash (``jaxlogit.store``). Image ``indices[i]``'s
    attack key is ``fold_in(key(attack.seed), indices[i])``, so a row depends only on its image: a
    resumed store equals an uninterrupted one, the rows of a subset equal those of the whole split,
    and neither ``batch_size`` (images attacked at a time on each device) nor the number of devices
    changes a value. Each call attacks ``batch_size`` images on every device of
    ``jax.local_devices()`` (the last call padded; ``AUTO``: the largest up to
    ``DEFAULT_ATTACK_BATCH`` that fits the device, :func:`attack_batch_size`; nothing is sized when
    the store is complete). An existing store, complete or not, keeps its shard size.
    Images are decoded by ``data_workers`` processes (``data.iter_batches``) while the devices
    attack; the store does not depend on them.
    """
    if batch_size != AUTO:
        _validate.positive_int("--attack-batch", batch_size)
    data.check_workers(data_workers)
    if indices is None:
        indices = np.arange(len(split) if limit is None else min(limit, len(split)))
        subset = limit
    else:
        indices = np.asarray(indices)
        subset = f"indices-{paths.config_hash({'indices': indices.tolist()})}"
    n = len(indices)
    directory = store_dir(backbone, attack, split, split_name, subset, cache)
    mesh = _mesh.data_mesh(jax.local_devices())
    batch_size = _resolved_batch(
        batch_size, backbone, attack, split.image_shape, store.is_complete(directory), cap=batch_cap(n, mesh)
    )
    attack_batch = attack_program(backbone.logits_fn(), attack, mesh)
    rows = _mesh.global_rows(_mesh.unpadded_per_device(batch_size, n, mesh), mesh)
    reader = data.BatchReader(split, indices, rows, workers=data_workers)  # one stream for all shards

    def produce(start: int, stop: int) -> dict:
        parts = []
        batches = reader.read(start, stop)
        for begin in range(start, stop, rows):
            end = min(begin + rows, stop)
            x, y = next(batches)
            parts.append(_attack_rows(attack_batch, x, y, indices[begin:end], rows))
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
        "attack": attack.cache_key(),
        "split": split_name,
        "subset": subset,
        "num_items": n,
        "attack_keys": ATTACK_KEYS,
    }
    shard_size = store.shard_size_of(directory) or SHARD_ROWS
    with reader, progress_log.stage_fields(attack_batch=batch_size):  # the progress log says the batch
        return store.build(
            directory,
            n,
            produce,
            shard_size=shard_size,
            config=config,
            progress=progress,
            processes=distributed.processes(),
        )


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
      successful_only: adversarial logits only from rows whose attack succeeded (the store's
        ``success``); a failed row gives its clean logits for both draws
        (``corrector.adversarial_or_clean``).
      depth: hidden layers of width ``hidden`` (the paper: 1); must be 1 when ``hidden`` is None.
        Left out of the cache key when 1, so correctors cached before it existed keep their keys.
    """

    hidden: int | None = 10_000
    epochs: int = 50
    batch_size: int = 256
    lr: float = 5e-5
    weight_decay: float = 1e-4
    p_clean: float = 0.3
    holdout_fraction: float = 0.1
    seed: int = 0
    successful_only: bool = True
    depth: int = 1

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
        corrector.check_depth(self.hidden, self.depth)


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
    Several processes (``jaxlogit.distributed``) train it together, one global batch a step.
    """
    key_config = {"logits": train_logits.directory.name, "corrector": corrector_key(config)}
    directory = paths.artifact_dir(
        "correctors", train_logits.directory.name.rsplit("-", 1)[0], key_config, cache
    )
    processes = distributed.processes()
    cached = _cached_corrector(directory, rebuild)
    if _found_everywhere(cached, processes):
        return cached
    paths.check_writable(directory.parent)
    with _lock.exclusive(_writer_lock(directory, processes)):
        cached = _cached_corrector(directory, rebuild)  # made by the process we waited for
        if _found_everywhere(cached, processes):
            return cached
        return _train_corrector(train_logits, config, directory, progress, processes)


def corrector_key(config: CorrectorConfig) -> dict:
    """The fields of ``config`` that key its cached corrector: all of them, but ``depth`` only when
    it is not 1 (the key of every corrector cached before ``depth`` existed is unchanged)."""
    fields = dataclasses.asdict(config)
    if fields["depth"] == 1:
        del fields["depth"]
    return fields


def _found_everywhere(cached: TrainedCorrector | None, processes: distributed.Processes | None) -> bool:
    """Whether the corrector is cached, for this process and (several processes) for every one."""
    return cached is not None if processes is None else not processes.failed(cached is not None)


def _writer_lock(directory: pathlib.Path, processes: distributed.Processes | None) -> pathlib.Path:
    """What a writer of ``directory`` locks: the artifact (one process, or process 0 of several),
    else a name of its own, so processes writing one artifact together do not wait for each other."""
    if processes is None or processes.index == 0:
        return directory
    return directory.with_name(f"{directory.name}.part-{processes.index}")


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
    train_logits: store.LogitStore,
    config: CorrectorConfig,
    directory: pathlib.Path,
    progress: bool,
    processes: distributed.Processes | None = None,
) -> TrainedCorrector:
    """Trains the corrector of ``config`` and saves it in ``directory`` (several processes: together,
    every process saving, as orbax wants; the last epochs' checkpoints are removed by process 0)."""
    num_classes = int(train_logits.shape("clean_logits")[1])
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
        successful_only=config.successful_only,
        depth=config.depth,
    )
    meta = {
        "config": dataclasses.asdict(config),
        "logits": str(train_logits.directory),
        "best_epoch": int(result.best_epoch),
        "holdout_accuracy": [float(a) for a in result.holdout_accuracy],
    }
    corrector.save(directory, result.params, meta, module=result.module)
    if processes is not None:
        processes.barrier("corrector saved")
    if processes is None or processes.index == 0:
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
    batch_size: int | str = AUTO,
    data_workers: int | None = None,
) -> np.ndarray:
    """The paper's *selected* set: the first ``per_class`` images per class that ``backbone``
    classifies correctly, among the first ``limit`` images of ``split`` (all if None). Cached.

    The backbone predicts ``batch_size`` images per device at a time (``AUTO``: the largest up to
    ``DEFAULT_PREDICT_BATCH`` that fits the device), decoded by ``data_workers`` processes (the
    result depends on neither).

    Returns:
      int indices into ``split``, sorted, shape ``(<= per_class * C,)``.
    """
    if batch_size != AUTO:
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
    preds = training.predict_classes(backbone.logits_fn(), split, batch_size=batch_size, workers=data_workers)
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
    batch_size: int | str = AUTO,
    data_workers: int | None = None,
) -> dict[str, np.ndarray]:
    """The logit-store arrays of the images at ``indices`` (e.g. the selected set) under ``attack``.

    Sliced from the complete store of the first ``limit`` images if one is cached, else the
    attack runs on those images only (a store of its own), ``batch_size`` at a time. Row i is
    image ``indices[i]``; either way it equals row ``indices[i]`` of the complete store (per-image keys).
    """
    full_dir = store_dir(backbone, attack, split, split_name, limit, cache)
    if store.is_complete(full_dir):
        full = store.open(full_dir)
        return {k: full.rows(k, indices) for k in full.keys()}
    sel = ensure_logits(
        backbone,
        attack,
        split,
        split_name,
        indices=indices,
        batch_size=batch_size,
        cache=cache,
        progress=progress,
        data_workers=data_workers,
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
    batch_size: int | str = AUTO,
    data_workers: int | None = None,
) -> TrainedCorrector:
    """The corrector trained on ``attack``'s logits of the first ``limit`` images of ``train_split``.

    Cached: the same store and corrector as ``experiments._common.corrector_for`` with the same
    ``limit`` and ``config`` (library code for the CLI, which must not import ``experiments``);
    ``batch_size`` images are attacked at a time, decoded by ``data_workers`` processes.
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
        data_workers=data_workers,
    )
    return ensure_corrector(
        train_store, fitting_batch(config, len(train_store)), cache=cache, progress=progress
    )
