"""``jaxlogit backbone train|eval``: the compact backbones on the default dataset."""

from __future__ import annotations

import click

from jaxlogit import batch_fit, data, training
from jaxlogit.cli._app import (
    batch_option,
    cli,
    common_options,
    data_workers_option,
    dataset_option,
    trained_backbone,
)


@cli.group()
def backbone() -> None:
    """Train and evaluate the compact backbones on Fashion-MNIST or another --dataset (cached)."""


def backbone_options(fn):
    """--arch, --epochs, --seed, --dataset (which trained config) plus the common options."""
    fn = common_options(fn)
    fn = dataset_option(fn)
    fn = click.option("--seed", type=int, default=0, show_default=True)(fn)
    fn = click.option(
        "--epochs",
        type=click.IntRange(min=1),
        default=None,
        help="Training epochs (default: the arch's, see training.DEFAULT_EPOCHS).",
    )(fn)
    return click.option("--arch", required=True, help="A compact backbone (see `jaxlogit models`).")(fn)


def _ensure(
    arch, epochs, seed, dataset, data_dir, cache_dir, rebuild=False
) -> tuple[training.BackboneConfig, training.Backbone]:
    overrides = {"seed": seed} if epochs is None else {"seed": seed, "epochs": epochs}
    config = training.default_config(arch, dataset=dataset, **overrides)
    return config, trained_backbone(arch, dataset, data_dir, cache_dir, config=config, rebuild=rebuild)


@backbone.command("train")
@backbone_options
def train_cmd(arch, epochs, seed, dataset, data_dir, cache_dir) -> None:
    """Train ARCH (or reuse its cached checkpoint; a damaged one is trained again) and print its
    test accuracy."""
    _, model = _ensure(arch, epochs, seed, dataset, data_dir, cache_dir, rebuild=True)
    click.echo(f"checkpoint: {model.directory}")
    click.echo(f"train seconds: {model.meta['train_seconds']}")
    click.echo(f"accuracy: {model.meta['test_accuracy']:.4f}")


@backbone.command("eval")
@backbone_options
@batch_option("predict", batch_fit.AUTO, "Images per device per prediction call")
@data_workers_option
def eval_cmd(arch, epochs, seed, dataset, predict_batch, data_workers, data_dir, cache_dir) -> None:
    """Evaluate ARCH on the dataset's evaluation split (Fashion-MNIST: the 10,000 test images;
    trains it first if it is not cached)."""
    config, model = _ensure(arch, epochs, seed, dataset, data_dir, cache_dir)
    split = data.load(config.dataset, data.get(config.dataset).eval_split, data_dir=data_dir)
    acc = training.accuracy(model.logits_fn(), split, batch_size=predict_batch, workers=data_workers)
    click.echo(f"checkpoint: {model.directory}")
    click.echo(f"accuracy: {acc:.4f}")
