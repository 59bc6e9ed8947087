"""Algorithm 1 end to end: held-out split, epochs of data-parallel steps, selection, checkpoints."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import _validate, backend, store
from jaxlogit.corrector import _parallel
from jaxlogit.corrector._checkpoint import EpochCheckpoints
from jaxlogit.corrector._evaluate import corrected_logits
from jaxlogit.corrector._module import Corrector, check_depth, init_params
from jaxlogit.corrector._step import corrector_optimizer, init_state, make_train_step
from jaxlogit.errors import JaxlogitError
from jaxlogit.progress import EVENTS_FILE, progress_bar


class TrainResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      params: params of the epoch with the best held-out accuracy (numpy pytree).
      module: the ``Corrector``.
      best_epoch: that epoch, 1-based.
      holdout_accuracy: (epochs,) accuracy after each epoch on the held-out training logits,
        clean and adversarial together (NaN when ``holdout_fraction`` is 0).
      losses: (epochs * steps_per_epoch,) training loss of every step.
      clean_fractions: (epochs * steps_per_epoch,) fraction of clean logits in every step's batch.
      last_params: params after the last epoch (numpy pytree).
      holdout_indices: sorted rows of the training logits held out for selection.
      num_devices: devices the batch was split over.
    """

    params: Any
    module: Corrector
    best_epoch: int
    holdout_accuracy: np.ndarray
    losses: np.ndarray
    clean_fractions: np.ndarray
    last_params: Any
    holdout_indices: np.ndarray
    num_devices: int


class _History(NamedTuple):
    """The JSON-able part of a run, checkpointed with each epoch."""

    losses: list
    clean_fractions: list
    holdout_accuracy: list
    best_epoch: int


def train(
    data: Mapping[str, np.ndarray],
    *,
    num_classes: int,
    hidden: int | None = 10_000,
    epochs: int,
    batch_size: int = 256,
    lr: float = 5e-5,
    weight_decay: float = 1e-4,
    p_clean: float = 0.3,
    keep_prob: float = 0.5,
    key: jax.Array,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    holdout_fraction: float = 0.1,
    progress: bool = True,
    successful_only: bool = True,
    depth: int = 1,
) -> TrainResult:
    """Trains a corrector as Algorithm 1, data-parallel over every device in ``jax.devices()``.

    Each epoch visits the non-held-out rows in an order that depends only on ``(key, epoch)``
    and drops the last partial batch; each step mixes clean and adversarial logits
    (``p_clean``), minimises softmax cross-entropy on the true labels with Adam and coupled L2
    decay. After each epoch the accuracy on the held-out rows (clean and adversarial logits)
    picks the best epoch: selection never sees a test set. With ``successful_only``, a row whose
    attack failed (``success`` False) stands for a clean image twice: its clean logits enter for
    its adversarial draw too (:func:`adversarial_or_clean`). With ``checkpoint_dir`` every epoch
    is checkpointed; ``resume=True`` continues from the last checkpoint and ends with exactly
    the params and losses of an uninterrupted run. With several processes (``jaxlogit.distributed``)
    every process calls it with the same data and key; each step's global batch is the one a single
    process would take, each process putting its devices' slices.

    Args:
      data: a ``LogitStore`` or a dict with ``clean_logits`` (N, C), ``adv_logits`` (N, C),
        ``labels`` (N,) of the *training* images, and optionally ``success`` (N,) bool (the
        attack fooled the backbone; absent: every row counts as attacked). A store is read batch
        by batch (only the rows of a batch in memory), never whole; both give the same result.
      num_classes: C.
      hidden: D, or None for the single-layer corrector.
      epochs: total epochs (a resumed run counts the ones already done).
      batch_size: global batch, split over the devices (must divide evenly).
      lr: Adam learning rate.
      weight_decay: coupled L2 coefficient (``torch.optim.Adam(weight_decay=...)``).
      p_clean: probability that an example enters its batch as clean logits.
      keep_prob: dropout keep probability of the hidden layer.
      key: the root of all randomness (held-out split, init, data order, mixing, dropout).
      checkpoint_dir: where to checkpoint each epoch (None: no checkpoints).
      resume: continue from the last checkpoint in ``checkpoint_dir`` (start afresh if none).
      holdout_fraction: fraction of rows held out for model selection (0: keep the last epoch).
      progress: show a progress bar.
      successful_only: take adversarial logits only from rows whose attack succeeded (False:
        every row's, as before the success mask was used).
      depth: hidden layers of width ``hidden`` (the paper: 1); 1 when ``hidden`` is None.

    Returns:
      A ``TrainResult``.

    Raises:
      JaxlogitError: bad shapes or sizes, or checkpoints that do not belong to this run.
    """
    _check_settings(num_classes, hidden, epochs, batch_size, lr, weight_decay, p_clean, keep_prob)
    check_depth(hidden, depth)
    data, labels = _training_data(data, num_classes)
    success = _attacked_rows(data, len(labels), successful_only)
    mesh = _parallel.data_mesh()
    _parallel.check_batch_size(batch_size, mesh)
    holdout_key, init_key, order_key, step_key = _split4(key)
    train_rows, holdout_rows = holdout_split(len(labels), holdout_fraction, key=holdout_key)
    steps_per_epoch = len(train_rows) // batch_size
    if steps_per_epoch == 0:
        raise JaxlogitError(
            f"{len(train_rows)} training rows are fewer than one batch of {batch_size}; lower the batch size"
        )

    module = Corrector(num_classes=num_classes, hidden=hidden, keep_prob=keep_prob, depth=depth)
    state = _state_initializer(module, lr, weight_decay, mesh)(init_key)
    step_fn = _sharded_train_step(module, lr, weight_decay, p_clean, mesh)
    put_batch = _parallel.putter(_parallel.batch_sharding(mesh))
    # Several processes: the held-out batches go to every device whole, so each process reads back
    # all corrected logits; one process keeps the batch split.
    put_holdout = put_batch if jax.process_count() == 1 else _parallel.putter(_parallel.replicated(mesh))
    holdout = (data, holdout_rows, success)

    settings = _run_settings(
        num_classes, hidden, keep_prob, batch_size, lr, weight_decay, p_clean, holdout_fraction, key
    )
    settings["successful_only"] = successful_only
    if depth != 1:  # depth 1 keeps the identity of checkpoints made before depth existed
        settings["depth"] = depth
    identity = _identity(settings, data, labels)
    checkpoints = EpochCheckpoints(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and checkpoints is None:
        raise JaxlogitError(
            "resume needs a checkpoint directory; pass checkpoint_dir (CLI: --checkpoint-dir)"
        )
    start, state, best_params, history = _start(checkpoints, resume, identity, epochs, state, checkpoint_dir)

    try:
        events = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir) / EVENTS_FILE
        with progress_bar(
            "corrector", epochs, enabled=progress, completed=start, unit="epoch", events=events
        ) as advance:
            for epoch in range(start + 1, epochs + 1):
                order = train_rows[_epoch_permutation(order_key, epoch, len(train_rows))]
                state, losses, fractions = _run_epoch(
                    step_fn, state, (data, success), order, batch_size, put_batch, step_key
                )
                accuracy = _holdout_accuracy(state.params, module, holdout, 4 * batch_size, put_holdout)
                best_params, history = _update_history(
                    history, best_params, state.params, epoch, losses, fractions, accuracy
                )
                if checkpoints is not None:
                    checkpoints.save(
                        epoch,
                        {"state": state, "best_params": best_params},
                        {"identity": identity, **history._asdict()},
                    )
                advance(1, loss=float(np.mean(losses)), holdout=accuracy)
    finally:
        if checkpoints is not None:
            checkpoints.close()

    return TrainResult(
        params=jax.device_get(best_params),
        module=module,
        best_epoch=history.best_epoch,
        holdout_accuracy=np.asarray(history.holdout_accuracy, np.float64),
        losses=np.asarray(history.losses, np.float32),
        clean_fractions=np.asarray(history.clean_fractions, np.float32),
        last_params=jax.device_get(state.params),
        holdout_indices=holdout_rows,
        num_devices=mesh.devices.size,
    )


@functools.lru_cache(maxsize=8)
def _state_initializer(module: Corrector, lr: float, weight_decay: float, mesh) -> Callable:
    """``key -> CorrectorState`` compiled once per setting, replicated over the mesh."""
    optimizer = corrector_optimizer(lr, weight_decay)
    return jax.jit(
        lambda key: init_state(init_params(module, key=key), optimizer),
        out_shardings=_parallel.replicated(mesh),
    )


@functools.lru_cache(maxsize=8)
def _sharded_train_step(module: Corrector, lr: float, weight_decay: float, p_clean: float, mesh) -> Callable:
    """The jitted data-parallel step, built once per setting (no recompiles across runs)."""
    step = make_train_step(module, corrector_optimizer(lr, weight_decay), p_clean=p_clean)
    return _parallel.shard_train_step(step, mesh)


def holdout_split(num_rows: int, fraction: float, *, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``range(num_rows)`` into (training rows, held-out rows), both sorted, by ``key``.

    ``round(fraction * num_rows)`` rows are held out (at least one when ``fraction > 0``).
    """
    if not 0.0 <= fraction < 1.0:
        raise JaxlogitError(f"holdout fraction must be in [0, 1), got {fraction}")
    held = 0 if fraction == 0 else max(1, round(fraction * num_rows))
    perm = np.asarray(_permutation(key, num_rows))
    return np.sort(perm[held:]), np.sort(perm[:held])


@functools.partial(jax.jit, static_argnums=1)
def _permutation(key: jax.Array, n: int) -> jax.Array:
    return jax.random.permutation(key, n)


@functools.partial(jax.jit, static_argnums=2)
def _epoch_permutation_device(key: jax.Array, epoch: int, n: int) -> jax.Array:
    return jax.random.permutation(jax.random.fold_in(key, epoch), n)


def _epoch_permutation(key: jax.Array, epoch: int, n: int) -> np.ndarray:
    """The order of epoch ``epoch``: a permutation of ``range(n)`` that depends only on (key, epoch)."""
    return np.asarray(_epoch_permutation_device(key, epoch, n))


@jax.jit
def _split4(key: jax.Array) -> tuple[jax.Array, ...]:
    """The run's four keys: held-out split, init, data order, steps."""
    return tuple(jax.random.split(key, 4))


class _ArrayRows:
    """In-memory arrays (a dict of them) with the reading interface of a ``LogitStore``."""

    def __init__(self, data: Mapping[str, np.ndarray]):
        self._arrays = {key: np.asarray(data[key]) for key in data.keys()}

    def __contains__(self, key: str) -> bool:
        return key in self._arrays

    def shape(self, key: str) -> tuple[int, ...]:
        return self._arrays[key].shape

    def rows(self, key: str, indices: np.ndarray) -> np.ndarray:
        return self._arrays[key][indices]


RowSource = store.LogitStore | _ArrayRows
"""Training logits read by rows: ``rows(key, indices)`` and ``shape(key)``."""


def _training_data(data: Mapping[str, np.ndarray] | store.LogitStore, num_classes: int):
    """``data`` as a ``RowSource``, checked (shapes, finite logits, labels in range), and its labels
    (N,) int32. A store's logits are checked a chunk at a time."""
    source = data if isinstance(data, store.LogitStore) else _ArrayRows(data)
    shapes = {key: tuple(source.shape(key)) for key in ("clean_logits", "adv_logits", "labels")}
    expected = (shapes["labels"][0], num_classes) if shapes["labels"] else None
    if len(shapes["labels"]) != 1 or shapes["clean_logits"] != expected or shapes["adv_logits"] != expected:
        raise JaxlogitError(
            f"training logits have shapes clean {shapes['clean_logits']}, adv {shapes['adv_logits']}, "
            f"labels {shapes['labels']}; expected (N, {num_classes}), (N, {num_classes}), (N,): "
            "check num_classes"
        )
    num_rows = shapes["labels"][0]
    chunk = max(1, _CHECK_CHUNK_BYTES // (4 * num_classes))
    for key in ("clean_logits", "adv_logits"):
        for start in range(0, num_rows, chunk):
            rows = np.arange(start, min(start + chunk, num_rows))
            _validate.finite(key, np.asarray(source.rows(key, rows), np.float32), "logits")
    labels = np.asarray(source.rows("labels", np.arange(num_rows)), np.int32)
    _validate.class_labels("labels", labels, num_classes)
    return source, labels


_CHECK_CHUNK_BYTES = 1 << 24  # logits checked for NaN 16 MiB at a time


def _batch(data: RowSource, rows: np.ndarray, success: np.ndarray) -> dict[str, np.ndarray]:
    """The training batch of ``rows`` (B,): ``clean_logits``, ``adv_logits`` (B, C) float32 (a row
    whose attack failed, by ``success`` (N,): its clean logits, ``adversarial_or_clean``) and
    ``labels`` (B,) int32."""
    clean = np.asarray(data.rows("clean_logits", rows), np.float32)
    adv = np.asarray(data.rows("adv_logits", rows), np.float32)
    return {
        "clean_logits": clean,
        "adv_logits": adversarial_or_clean(clean, adv, success[rows]),
        "labels": np.asarray(data.rows("labels", rows), np.int32),
    }


def adversarial_or_clean(clean: np.ndarray, adv: np.ndarray, success: np.ndarray) -> np.ndarray:
    """The adversarial logits a corrector trains on: ``adv`` where the attack succeeded, else
    the clean logits (a failed attack left a correctly classified, near-clean input; counting it
    as adversarial would teach the corrector nothing about attacks and dilute the attacked rows).

    Args:
      clean, adv: (B, C) logits of the same rows.
      success: (B,) bool, the attack fooled the backbone on that row.

    Returns:
      (B, C): ``adv[i]`` if ``success[i]`` else ``clean[i]``.
    """
    return np.where(np.asarray(success, bool)[:, None], adv, clean)


def _attacked_rows(data: RowSource, n: int, successful_only: bool) -> np.ndarray:
    """(N,) bool: rows whose adversarial logits count (all when not ``successful_only`` or no mask)."""
    if not successful_only or "success" not in data:
        return np.ones(n, bool)
    success = np.asarray(data.rows("success", np.arange(n)), bool)
    if success.shape != (n,):
        raise JaxlogitError(f"training logits' success mask has shape {success.shape}; expected ({n},)")
    return success


def _check_settings(num_classes, hidden, epochs, batch_size, lr, weight_decay, p_clean, keep_prob) -> None:
    """Raises a one-line error for a setting that would train garbage or crash (NaN lr, hidden -1)."""
    _validate.positive_int("num_classes", num_classes)
    if hidden is not None:
        _validate.positive_int("hidden", hidden)
    _validate.positive_int("epochs", epochs)
    _validate.positive_int("batch_size", batch_size)
    _validate.positive_number("lr", lr)
    _validate.number_in("weight_decay", weight_decay, 0.0, float("inf"), high_open=True)
    _validate.number_in("p_clean", p_clean, 0.0, 1.0)
    _validate.number_in("keep_prob", keep_prob, 1 / 256, 1.0)


def _holdout_batch(
    data: RowSource, rows: np.ndarray, success: np.ndarray, first: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """Items ``[first, stop)`` of the held-out set, which is the clean logits of ``rows`` (H,) then
    their adversarial logits (``adversarial_or_clean`` by ``success`` (N,)): logits
    (stop - first, C) float32 and labels (stop - first,) int32."""
    items = np.arange(first, stop)
    is_adv = items >= len(rows)
    picked = rows[items % len(rows)]
    adv_rows = picked[is_adv]
    logits = np.empty((len(items), *data.shape("clean_logits")[1:]), np.float32)
    logits[~is_adv] = data.rows("clean_logits", picked[~is_adv])
    logits[is_adv] = adversarial_or_clean(
        data.rows("clean_logits", adv_rows), data.rows("adv_logits", adv_rows), success[adv_rows]
    )
    return logits, np.asarray(data.rows("labels", picked), np.int32)


def _holdout_accuracy(params, module, holdout, batch_size, put) -> float:
    """Accuracy on the held-out rows, clean and adversarial (2H items), read ``batch_size`` at a time."""
    data, rows, success = holdout
    total = 2 * len(rows)
    if total == 0:
        return float("nan")
    correct = 0
    for first in range(0, total, batch_size):
        logits, labels = _holdout_batch(data, rows, success, first, min(first + batch_size, total))
        corrected = corrected_logits(params, module, logits, batch_size=batch_size, put=put)
        correct += int(np.sum(np.argmax(corrected, axis=-1) == labels))
    return correct / total


def _run_epoch(step_fn, state, data, order, batch_size, put, key):
    """One pass over ``order`` in batches; returns the state and per-step losses, clean fractions."""
    data, success = data
    metrics, on_cpu = [], backend.on_cpu()
    for i in range(len(order) // batch_size):
        rows = order[i * batch_size : (i + 1) * batch_size]
        state, step_metrics = step_fn(state, put(_batch(data, rows, success)), key)
        # One step in flight at a time on CPU: with several steps queued, XLA:CPU's all-reduce
        # across forced host devices deadlocked here (D=10,000, 2 devices, 2 cores); waiting
        # costs little there. Accelerators keep steps queued.
        if on_cpu:
            jax.block_until_ready(step_metrics)
        metrics.append(step_metrics)
    metrics = jax.device_get(metrics)
    return state, [float(m["loss"]) for m in metrics], [float(m["clean_fraction"]) for m in metrics]


def _update_history(history: _History, best_params, params, epoch, losses, fractions, accuracy):
    """The history after ``epoch``, and the params to keep (first epoch with the best accuracy wins)."""
    best = history.holdout_accuracy[history.best_epoch - 1] if history.best_epoch else None
    improved = best is None or np.isnan(accuracy) or accuracy > best
    return (params if improved else best_params), _History(
        losses=history.losses + losses,
        clean_fractions=history.clean_fractions + fractions,
        holdout_accuracy=history.holdout_accuracy + [accuracy],
        best_epoch=epoch if improved else history.best_epoch,
    )


def _start(checkpoints, resume, identity, epochs, state, checkpoint_dir):
    """``(epochs done, state, best params, history)``: fresh, or restored from the last checkpoint."""
    fresh = (0, state, state.params, _History([], [], [], 0))
    latest = checkpoints.latest_epoch() if checkpoints is not None else None
    if latest is None:
        return fresh
    if not resume:
        raise JaxlogitError(
            f"{checkpoint_dir} already holds corrector checkpoints; pass resume=True (CLI: --resume) or "
            "delete it"
        )
    if checkpoints.record(latest)["identity"] != identity:
        raise JaxlogitError(
            f"the checkpoints in {checkpoint_dir} belong to another training run; delete them or choose "
            "another directory"
        )
    if latest > epochs:
        raise JaxlogitError(
            f"{checkpoint_dir} holds {latest} epochs, more than the {epochs} asked; ask for at least {latest}"
        )
    tree, record = checkpoints.restore(latest, {"state": state, "best_params": state.params})
    history = _History(
        record["losses"], record["clean_fractions"], record["holdout_accuracy"], record["best_epoch"]
    )
    return latest, tree["state"], tree["best_params"], history


def _run_settings(
    num_classes, hidden, keep_prob, batch_size, lr, weight_decay, p_clean, holdout_fraction, key
) -> dict:
    """The settings that make a run what it is (not ``epochs``: a run may be extended)."""
    key_data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return {
        "num_classes": num_classes,
        "hidden": hidden,
        "keep_prob": keep_prob,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "p_clean": p_clean,
        "holdout_fraction": holdout_fraction,
        "key": np.asarray(key_data).tolist(),
    }


def _identity(settings: dict, data: RowSource, labels: np.ndarray) -> dict:
    """``settings`` plus a fingerprint of the data (labels and up to 1,000 evenly spaced rows)."""
    rows = np.linspace(0, len(labels) - 1, num=min(len(labels), 1000)).astype(np.int64)
    clean, adv = (np.asarray(data.rows(key, rows), np.float32) for key in ("clean_logits", "adv_logits"))
    digest = hashlib.sha256()
    for part in (labels, clean, adv):
        digest.update(np.ascontiguousarray(part).tobytes())
    return json.loads(json.dumps({**settings, "num_rows": len(labels), "data": digest.hexdigest()[:16]}))
