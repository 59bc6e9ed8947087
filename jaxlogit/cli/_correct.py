"""``jaxlogit logits`` and ``jaxlogit correct train|eval``: the logit store and the corrector."""

from __future__ import annotations

import click
import numpy as np

from jaxlogit import data, pipeline, training
from jaxlogit.cli._app import AttackName, check_arch, cli, common_options


def _backbone(arch: str, data_dir, cache_dir) -> training.Backbone:
    check_arch(arch, compact_only=True)
    return training.ensure_backbone(training.default_config(arch), data_dir=data_dir, cache=cache_dir)


def _store(arch, attack_name, split_name, limit, eps, data_dir, cache_dir):
    attack = pipeline.AttackConfig(attack_name, eps=eps)
    backbone = _backbone(arch, data_dir, cache_dir)
    split = data.load("fashion_mnist", split_name, data_dir=data_dir)
    return pipeline.ensure_logits(backbone, attack, split, split_name, limit=limit, cache=cache_dir)


def attack_options(fn):
    """--arch, --attack, --eps shared by the logit and corrector commands."""
    fn = click.option("--eps", type=float, default=16 / 255, show_default="16/255",
                      help="Budget of the attacks that take one (pgd, mim: L-inf).")(fn)
    fn = click.option("--attack", "attack_name", required=True, type=AttackName(),
                      help="A registered attack (jaxlogit.attacks), with the paper's settings.")(fn)
    return click.option("--arch", required=True, help="A compact backbone (see `jaxlogit models`).")(fn)


@cli.command()
@attack_options
@click.option("--split", "split_name", type=click.Choice(["train", "test"]), required=True)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images (default: all).")
@common_options
def logits(arch, attack_name, eps, split_name, limit, data_dir, cache_dir) -> None:
    """Record clean and adversarial logits of a split (streamed, resumable, cached)."""
    s = _store(arch, attack_name, split_name, limit, eps, data_dir, cache_dir)
    labels = np.asarray(s["labels"])
    click.echo(f"store: {s.directory}")
    click.echo(f"images: {len(s)}")
    click.echo(f"clean accuracy: {np.mean(np.asarray(s['clean_logits']).argmax(-1) == labels):.4f}")
    click.echo(f"adversarial accuracy: {np.mean(np.asarray(s['adv_logits']).argmax(-1) == labels):.4f}")
    click.echo(f"success rate: {np.mean(np.asarray(s['success'])):.4f}")


@cli.group()
def correct() -> None:
    """Train and evaluate the logit corrector (Algorithm 1)."""


def corrector_options(fn):
    """Corrector settings; defaults are the embedded default's (see experiments.table1)."""
    defaults = pipeline.DEFAULT_CORRECTOR
    fn = click.option("--seed", type=int, default=0, show_default=True)(fn)
    fn = click.option("--lr", type=float, default=defaults.lr, show_default=True)(fn)
    fn = click.option("--hidden", type=int, default=defaults.hidden, show_default=True, help="D; 0 = single layer C -> C.")(fn)
    fn = click.option("--epochs", type=click.IntRange(min=1), default=defaults.epochs, show_default=True)(fn)
    return click.option("--limit", type=click.IntRange(min=1), default=pipeline.DEFAULT_TRAIN_LIMIT, show_default=True,
                        help="Training images whose logits train the corrector.")(fn)


def _corrector(arch, attack_name, eps, limit, epochs, hidden, lr, seed, data_dir, cache_dir, rebuild=False):
    config = pipeline.CorrectorConfig(hidden=hidden or None, epochs=epochs, lr=lr, seed=seed)
    train_store = _store(arch, attack_name, "train", limit, eps, data_dir, cache_dir)
    return pipeline.ensure_corrector(train_store, config, cache=cache_dir, rebuild=rebuild)


@correct.command("train")
@attack_options
@corrector_options
@common_options
def train_cmd(arch, attack_name, eps, limit, epochs, hidden, lr, seed, data_dir, cache_dir) -> None:
    """Train a corrector on ARCH's logits under ATTACK (resumes after a crash; cached; a damaged
    one is retrained)."""
    trained = _corrector(arch, attack_name, eps, limit, epochs, hidden, lr, seed, data_dir, cache_dir,
                         rebuild=True)
    click.echo(f"corrector: {trained.directory}")
    click.echo(f"best epoch (held-out training logits): {trained.meta['best_epoch']}")


@correct.command("eval")
@attack_options
@corrector_options
@click.option("--eval-attack", default=None, type=AttackName(),
              help="Evaluate on another attack's logits (transfer).")
@common_options
def eval_cmd(arch, attack_name, eps, limit, epochs, hidden, lr, seed, eval_attack, data_dir, cache_dir) -> None:
    """Accuracy on the test set, clean and adversarial, without and with correction."""
    trained = _corrector(arch, attack_name, eps, limit, epochs, hidden, lr, seed, data_dir, cache_dir)
    test = _store(arch, eval_attack or attack_name, "test", None, eps, data_dir, cache_dir)
    labels = np.asarray(test["labels"])
    for kind in ("clean", "adv"):
        z = np.asarray(test[f"{kind}_logits"])
        click.echo(f"{kind:5s} accuracy: {np.mean(z.argmax(-1) == labels):.4f}  corrected: "
                   f"{np.mean(trained.predict(z) == labels):.4f}")
