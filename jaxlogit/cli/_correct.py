"""``jaxlogit logits`` and ``jaxlogit correct train|eval``: the logit store and the corrector."""

from __future__ import annotations

import click
import numpy as np

from jaxlogit import data, pipeline
from jaxlogit.cli._app import (
    AttackName,
    batch_option,
    cli,
    common_options,
    data_workers_option,
    dataset_option,
    load_split,
    proportion,
    source_options,
    trained_backbone,
)
from jaxlogit.errors import JaxlogitError


def _store(
    *,
    arch,
    attack_name,
    split_name,
    limit,
    eps,
    dataset,
    data_dir,
    cache_dir,
    attack_batch,
    weights_dir=None,
    image_size=None,
    subset_seed=0,
    data_workers=None,
    **_other_options,
):
    """The logit store (cached; recorded now if not) named by a command's options: the
    ``attack_options`` and ``source_options`` plus ``split_name`` and ``limit``."""
    splits = data.get(dataset).splits
    if split_name not in splits:
        raise JaxlogitError(f"--split {split_name!r}: {dataset} has the splits {', '.join(splits)}")
    attack = pipeline.AttackConfig(attack_name, eps=eps)
    backbone = trained_backbone(arch, dataset, data_dir, cache_dir, weights_dir=weights_dir)
    split, limit = load_split(
        dataset, split_name, data_dir, limit, image_size=image_size, subset_seed=subset_seed
    )
    return pipeline.ensure_logits(
        backbone,
        attack,
        split,
        split_name,
        limit=limit,
        batch_size=attack_batch,
        cache=cache_dir,
        data_workers=data_workers,
    )


def attack_options(fn):
    """--arch, --attack, --eps, --dataset, --attack-batch, --data-workers and the source options
    (--weights-dir, ...) shared by the logit and corrector commands."""
    fn = source_options(fn)
    fn = data_workers_option(fn)
    fn = batch_option("attack", pipeline.AUTO, "Images per device per attack call")(fn)
    fn = dataset_option(fn)
    fn = click.option(
        "--eps",
        type=float,
        default=16 / 255,
        show_default="16/255",
        help="Budget of the attacks that take one (pgd, mim: L-inf).",
    )(fn)
    fn = click.option(
        "--attack",
        "attack_name",
        required=True,
        type=AttackName(),
        help="A registered attack (jaxlogit.attacks), with the paper's settings.",
    )(fn)
    return click.option(
        "--arch", required=True, help="A backbone of the dataset's kind (see `jaxlogit models`)."
    )(fn)


@cli.command()
@attack_options
@click.option(
    "--split",
    "split_name",
    required=True,
    help="The dataset's training or evaluation split (fashion_mnist: train or test).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only N images: the first N (imagenet: class-balanced, --subset-seed) [default: all].",
)
@common_options
def logits(**options) -> None:
    """Record clean and adversarial logits of a split (streamed, resumable, cached)."""
    s = _store(**options)
    n = len(s)
    click.echo(f"store: {s.directory}")
    click.echo(f"images: {n}")
    click.echo(f"clean accuracy: {proportion(_count_correct(s, 'clean_logits'), n)}")
    click.echo(f"adversarial accuracy: {proportion(_count_correct(s, 'adv_logits'), n)}")
    successes = sum(int(np.sum(s.rows("success", rows))) for rows in _row_chunks(n))
    click.echo(f"success rate: {proportion(successes, n)}")


_CHUNK_ROWS = 16 * 1024  # rows of a store in memory at a time: a multiple of the corrector's batch


def _row_chunks(num_rows: int):
    """Consecutive row indices (<= ``_CHUNK_ROWS``,) covering ``range(num_rows)``."""
    for start in range(0, num_rows, _CHUNK_ROWS):
        yield np.arange(start, min(start + _CHUNK_ROWS, num_rows))


def _count_correct(s, key: str, predict=lambda z: z.argmax(-1)) -> int:
    """How many rows of store ``s`` have ``predict(logits)`` equal to their label, read a chunk at a time."""
    return sum(
        int(np.sum(predict(s.rows(key, rows)) == s.rows("labels", rows))) for rows in _row_chunks(len(s))
    )


@cli.group()
def correct() -> None:
    """Train and evaluate the logit corrector (Algorithm 1)."""


def corrector_options(fn):
    """Corrector settings; defaults are the embedded default's (see experiments.table1)."""
    defaults = pipeline.DEFAULT_CORRECTOR
    fn = batch_option(
        "corrector", defaults.batch_size, "Training batch of the corrector (another value trains another)"
    )(fn)
    fn = click.option(
        "--holdout",
        type=click.FloatRange(0, 1, max_open=True),
        default=defaults.holdout_fraction,
        show_default=True,
        help="Share of the training logits held out to pick the best epoch; 0: train on all, keep the "
        "last epoch (the paper).",
    )(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True)(fn)
    fn = click.option("--lr", type=float, default=defaults.lr, show_default=True)(fn)
    fn = click.option(
        "--hidden", type=int, default=defaults.hidden, show_default=True, help="D; 0 = single layer C -> C."
    )(fn)
    fn = click.option(
        "--depth",
        type=click.IntRange(min=1),
        default=defaults.depth,
        show_default=True,
        help="Hidden layers of width D (the paper's: 1); ignored with --hidden 0.",
    )(fn)
    fn = click.option("--epochs", type=click.IntRange(min=1), default=defaults.epochs, show_default=True)(fn)
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=pipeline.DEFAULT_TRAIN_LIMIT,
        show_default=True,
        help="Training images whose logits train the corrector (imagenet: class-balanced).",
    )(fn)


def _corrector(
    *,
    limit,
    epochs,
    hidden,
    lr,
    seed,
    corrector_batch,
    cache_dir,
    holdout=pipeline.DEFAULT_CORRECTOR.holdout_fraction,
    depth=1,
    rebuild=False,
    **store_options,
):
    """The corrector named by a command's attack and corrector options (cached; trained now if not);
    ``store_options`` name its training logits (see ``_store``)."""
    config = pipeline.CorrectorConfig(
        hidden=hidden or None,
        epochs=epochs,
        batch_size=corrector_batch,
        lr=lr,
        seed=seed,
        holdout_fraction=holdout,
        depth=depth if hidden else 1,
    )
    train_split = data.get(store_options["dataset"]).train_split
    train_store = _store(**store_options, limit=limit, split_name=train_split, cache_dir=cache_dir)
    config = pipeline.fitting_batch(config, len(train_store))
    return pipeline.ensure_corrector(train_store, config, cache=cache_dir, rebuild=rebuild)


@correct.command("train")
@attack_options
@corrector_options
@common_options
def train_cmd(**options) -> None:
    """Train a corrector on ARCH's logits under ATTACK (resumes after a crash; cached; a damaged
    one is retrained)."""
    trained = _corrector(**options, rebuild=True)
    click.echo(f"corrector: {trained.directory}")
    if trained.meta["config"].get("holdout_fraction", 1):
        click.echo(f"best epoch (held-out training logits): {trained.meta['best_epoch']}")
    else:
        click.echo(f"kept the last epoch ({trained.meta['best_epoch']}): --holdout 0 holds nothing out")


@correct.command("eval")
@attack_options
@corrector_options
@click.option(
    "--eval-attack", default=None, type=AttackName(), help="Evaluate on another attack's logits (transfer)."
)
@common_options
def eval_cmd(eval_attack, **options) -> None:
    """Accuracy on the evaluation split, clean and adversarial, without and with correction."""
    trained = _corrector(**options)
    eval_split = data.get(options["dataset"]).eval_split
    attack_name = eval_attack or options["attack_name"]
    test = _store(**{**options, "attack_name": attack_name, "split_name": eval_split, "limit": None})
    n = len(test)
    for kind in ("clean", "adv"):
        plain = _count_correct(test, f"{kind}_logits")
        corrected = _count_correct(test, f"{kind}_logits", trained.predict_classes)
        click.echo(f"{kind:5s} accuracy: {proportion(plain, n)}  corrected: {proportion(corrected, n)}")
