"""Training and evaluating backbones on an in-memory split (the compact Fashion-MNIST models).

``ensure_backbone(config)`` is what commands and experiments call: it returns the cached
checkpoint for ``config`` if there is one and trains it otherwise. Training checkpoints its
state with orbax after every epoch and resumes from the last one after a crash.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

from jaxlogit import _digest, _lock, _mesh, _validate, _xla, batch_fit, batching, data, models, paths
from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _checkpoint
from jaxlogit.progress import EVENTS_FILE, progress_bar


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """How a compact backbone is trained. Its hash names the cached checkpoint.

    Attributes:
      arch: a name from ``models.names()``.
      dataset: the dataset it is trained on (a ``data.names()`` name that uses compact backbones).
      epochs: passes over the training split.
      batch_size: images per step.
      learning_rate: peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay to 0).
      weight_decay: AdamW decoupled weight decay.
      seed: the root of every key (init, shuffling, dropout).
    """

    arch: str
    dataset: str = data.DEFAULT_DATASET
    epochs: int = 2
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0


# Epochs that bring each compact backbone to >= 90% test accuracy (DenseNet learns slowest).
DEFAULT_EPOCHS = {"densenet_compact": 3}

DEFAULT_PREDICT_BATCH = 500
"""The most images per device per compiled call of ``predict_classes`` and ``accuracy`` that
``--predict-batch auto`` (the default) picks: the largest up to this one that fits the device
(results do not depend on it)."""


def default_config(arch: str, **overrides) -> BackboneConfig:
    """The training config the CLI and experiments use for ``arch`` (``overrides`` win)."""
    config = BackboneConfig(arch=arch, epochs=DEFAULT_EPOCHS.get(arch, BackboneConfig.epochs))
    return dataclasses.replace(config, **overrides)


class Backbone(NamedTuple):
    """A trained or imported backbone: module, variables, metadata and where it is stored."""

    module: nn.Module
    variables: dict
    meta: dict
    directory: pathlib.Path

    def logits_fn(self, compute_dtype=None) -> Callable[[jax.Array], jax.Array]:
        """``x`` (B,H,W,C) in [0,1] -> logits (B,C), eval mode, normalisation inside; the backbone
        computes in ``compute_dtype`` (None: float32; see ``models.logits_fn``)."""
        return models.logits_fn(
            self.module,
            self.variables,
            mean=self.meta["mean"],
            std=self.meta["std"],
            compute_dtype=compute_dtype,
        )

    @property
    def fingerprint(self) -> str:
        """Identity of the weights (hex SHA-256), in the key of every artifact made with them.

        The digest the checkpoint records (``meta["weights_sha256"]``, else ``meta["state_sha256"]``,
        which ``load_backbone`` computes for checkpoints written before digests were recorded), else
        the digest of the variables' values. A copy of the checkpoint in another folder has the same.
        """
        recorded = _checkpoint.recorded_digest(self.meta)
        return recorded or _digest.arrays_sha256(jax.tree.leaves(self.variables))


class TrainState(train_state.TrainState):
    """Flax TrainState that also carries BatchNorm running statistics."""

    batch_stats: Any


def backbone_dir(
    config: BackboneConfig, cache: str | None = None, data_dir: str | None = None
) -> pathlib.Path:
    """The cache folder of the checkpoint trained with ``config`` on the training split read from
    ``data_dir`` (None: the dataset's default places); that split's ``fingerprint`` is part of the key
    (remembered by its files' identity, so a cached backbone is found without loading the split)."""
    dataset = data.get(config.dataset)
    train_data = data.split_fingerprint(dataset, dataset.train_split, data_dir, cache=cache)
    key = {**dataclasses.asdict(config), "train_data": train_data}
    return paths.artifact_dir("backbones", config.arch, key, cache)


def backbone_optimizer(config: BackboneConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW with a short linear warm-up and cosine decay over all ``epochs``."""
    total = config.epochs * steps_per_epoch
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warmup_steps=max(1, total // 20), decay_steps=total
    )
    return optax.adamw(schedule, weight_decay=config.weight_decay)


def create_state(config: BackboneConfig, module: nn.Module, input_shape, steps_per_epoch: int) -> TrainState:
    """Fresh parameters (from ``config.seed``) and optimizer state."""
    variables = models.init(module, jax.random.key(config.seed), input_shape)
    return TrainState.create(
        apply_fn=module.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=backbone_optimizer(config, steps_per_epoch),
    )


def normalize(x: jax.Array, mean, std) -> jax.Array:
    """(x - mean) / std with per-channel constants broadcast over NHWC."""
    return (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)


def train_step(state: TrainState, images: jax.Array, labels: jax.Array, key: jax.Array, mean, std):
    """One AdamW step on a batch; returns ``(state, metrics)`` with loss and accuracy.

    Args:
      state: current TrainState.
      images: uint8 (B,H,W,C).
      labels: int32 (B,).
      key: dropout key for this step.
      mean, std: normalisation constants (static tuples).
    """
    x = normalize(images.astype(jnp.float32) / 255.0, mean, std)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, updates = state.apply_fn(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": key}
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return state, {"loss": loss, "accuracy": accuracy}


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled example order of one epoch; depends only on (seed, epoch)."""
    key = jax.random.fold_in(jax.random.key(seed), epoch)
    return np.asarray(jax.random.permutation(key, n))


def _checkpoint_manager(directory: pathlib.Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    return ocp.CheckpointManager(directory.absolute(), options=options)


def _state_tree(state: TrainState) -> dict:
    return {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "step": state.step,
    }


def train(
    config: BackboneConfig, split: data.ArraySplit, workdir: pathlib.Path, *, progress: bool = True
) -> dict:
    """Trains ``config.arch`` on ``split`` and returns its variables.

    Checkpoints the full training state in ``workdir`` after each epoch and, if ``workdir``
    already holds one, resumes after its last epoch (a crash loses at most one epoch).
    """
    spec = models.spec(config.arch, dataset=config.dataset)
    module = models.create(config.arch, num_classes=split.num_classes)
    steps_per_epoch = len(split) // config.batch_size
    state = create_state(config, module, split.image_shape, steps_per_epoch)
    manager = _checkpoint_manager(workdir)
    first_epoch = 0
    if manager.latest_step() is not None:
        first_epoch = manager.latest_step() + 1
        restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(_state_tree(state)))
        state = state.replace(**restored)
    step_fn = _xla.jit(train_step, static_argnums=(4, 5), donate_argnums=0)
    mean, std = tuple(spec.mean), tuple(spec.std)
    root_key = jax.random.key(config.seed)
    with progress_bar(
        f"train {config.arch}",
        config.epochs * steps_per_epoch,
        enabled=progress,
        completed=first_epoch * steps_per_epoch,
        unit="step",
        events=workdir / EVENTS_FILE,
    ) as advance:
        for epoch in range(first_epoch, config.epochs):
            order = epoch_order(config.seed, epoch, len(split))
            for i in range(steps_per_epoch):
                idx = np.sort(order[i * config.batch_size : (i + 1) * config.batch_size])
                key = jax.random.fold_in(root_key, epoch * steps_per_epoch + i)
                state, metrics = step_fn(state, split.images[idx], split.labels[idx], key, mean, std)
                if i % 20 == 19 or i == steps_per_epoch - 1:  # every 20 steps and at the end of an epoch
                    advance(i % 20 + 1, epoch=epoch, loss=float(metrics["loss"]))
            manager.save(epoch, args=ocp.args.StandardSave(_state_tree(state)))
            manager.wait_until_finished()
    manager.close()
    return {"params": state.params, "batch_stats": state.batch_stats}


def predict_batch_size(
    requested: int | str,
    fn: Callable,
    image_shape: tuple[int, ...],
    *,
    free_bytes: int | None = None,
    cap: int = DEFAULT_PREDICT_BATCH,
) -> int:
    """Images per call of the jitted prediction ``fn`` (x (B, H, W, C) -> (B,)): ``requested``
    (``batch_fit.AUTO`` or an int >= 1) checked against the free memory like the attack batch
    (``batch_fit.choose``; ``AUTO``: the largest up to ``cap`` that fits).

    Raises:
      JaxlogitError: an explicit batch that does not fit (the message names one that does).
    """
    if requested != batch_fit.AUTO:
        _validate.positive_int("--predict-batch", requested)

    def traced(batch: int):  # the call that follows reuses this trace
        return fn.trace(jax.ShapeDtypeStruct((batch, *image_shape), np.float32)).jaxpr

    def compiled(batch: int):
        return fn.lower(jax.ShapeDtypeStruct((batch, *image_shape), np.float32)).compile()

    def fit() -> batch_fit.MemoryFit:  # XLA's line, plus the weights the program holds as constants
        line = batch_fit.probe_fit(compiled)
        weights = batch_fit.constant_bytes(traced(batch_fit.PROBE_BATCHES[0]))
        return line._replace(fixed_bytes=line.fixed_bytes + weights)

    request = batch_fit.Request(
        option="--predict-batch",
        what=f"predictions at {image_shape[0]}x{image_shape[1]}",
        bound=lambda b: batch_fit.jaxpr_bound_bytes(traced(b)),
        fit=fit,
    )
    free = batch_fit.free_memory_bytes() if free_bytes is None else free_bytes
    return batch_fit.choose(request, requested, cap, free)


def predict_classes(
    logits_fn: Callable, split, *, batch_size: int | str = batch_fit.AUTO, workers: int | None = None
) -> np.ndarray:
    """Predicted classes (N,) int32 of every image of ``split``, ``batch_size`` images on each device
    of ``jax.local_devices()`` per call (``_mesh.over_rows``; ``AUTO``: :func:`predict_batch_size`),
    its images decoded by ``workers`` processes (``data.iter_batches``) while the devices predict."""

    def predict(x):
        return jnp.argmax(logits_fn(x), axis=-1)

    mesh = _mesh.data_mesh(jax.local_devices())
    cap = _mesh.unpadded_per_device(DEFAULT_PREDICT_BATCH, len(split), mesh)  # a few images: small
    batch_size = predict_batch_size(batch_size, _xla.jit(predict), split.image_shape, cap=cap)
    fn = _mesh.over_rows(predict, mesh)
    rows = _mesh.global_rows(_mesh.unpadded_per_device(batch_size, len(split), mesh), mesh)
    with data.iter_batches(split, np.arange(len(split)), rows, workers=workers) as batches:
        preds = [batching.map_batches(fn, x, batch_size=rows) for x, _ in batches]
    return np.concatenate(preds).astype(np.int32)


def accuracy(
    logits_fn: Callable, split, *, batch_size: int | str = batch_fit.AUTO, workers: int | None = None
) -> float:
    """Top-1 accuracy of ``logits_fn`` on all of ``split`` (``workers``: see ``predict_classes``)."""
    preds = predict_classes(logits_fn, split, batch_size=batch_size, workers=workers)
    return float(np.mean(preds == split.labels))


def load_backbone(directory: pathlib.Path) -> Backbone:
    """Loads a checkpoint written by ``models.save_checkpoint``."""
    module, variables, meta = models.load_checkpoint(directory)
    if _checkpoint.recorded_digest(meta) is None:  # written before checkpoints recorded digests
        meta = {**meta, "state_sha256": _checkpoint.state_sha256(pathlib.Path(directory).absolute())}
    return Backbone(module, variables, meta, pathlib.Path(directory))


def ensure_backbone(
    config: BackboneConfig,
    *,
    data_dir: str | None = None,
    cache: str | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> Backbone:
    """The backbone trained with ``config``: from the cache, or trained (and cached) now.

    One process trains it; another that asks for it meanwhile waits, then loads it.

    Args:
      rebuild: retrain when the cached checkpoint is damaged (it is replaced when the new one
        is complete); without it a damaged checkpoint is a ``JaxlogitError`` that says so.
    """
    directory = backbone_dir(config, cache, data_dir)
    cached = _load_cached(directory, rebuild)
    if cached is not None:
        return cached
    paths.check_writable(directory.parent)
    with _lock.exclusive(directory):
        cached = _load_cached(directory, rebuild)  # made by the process we waited for
        return cached if cached is not None else _train_and_save(config, directory, data_dir, progress)


def _load_cached(directory: pathlib.Path, rebuild: bool) -> Backbone | None:
    """The checkpoint in ``directory``; None if there is none, or if it is damaged and ``rebuild``."""
    if not (directory / "meta.json").exists():
        return None
    try:
        return load_backbone(directory)
    except JaxlogitError as err:
        if not rebuild:
            raise
        print(f"warning: {str(err).split(';')[0]}; training it again", file=sys.stderr)
        return None


def _train_and_save(config: BackboneConfig, directory: pathlib.Path, data_dir, progress: bool) -> Backbone:
    """Trains ``config`` and writes its checkpoint to ``directory`` (replacing a damaged one)."""
    spec = models.spec(config.arch, dataset=config.dataset)
    dataset = data.get(config.dataset)
    train_split = dataset.load(dataset.train_split, data_dir)
    test_split = dataset.load(dataset.eval_split, data_dir)
    workdir = directory.with_name(directory.name + ".train")
    start = time.perf_counter()
    variables = train(config, train_split, workdir, progress=progress)
    seconds = time.perf_counter() - start
    module = models.create(config.arch, num_classes=train_split.num_classes)
    test_accuracy = accuracy(models.logits_fn(module, variables, mean=spec.mean, std=spec.std), test_split)
    meta = {
        "arch": config.arch,
        "num_classes": train_split.num_classes,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "input_shape": list(spec.input_shape),
        "dataset": config.dataset,
        "config": dataclasses.asdict(config),
        "train_seconds": round(seconds, 1),
        "test_accuracy": test_accuracy,
    }
    models.save_checkpoint(directory, config.arch, variables, meta)
    shutil.rmtree(workdir, ignore_errors=True)
    return load_backbone(directory)
