"""``jaxlogit attack``: one attack on a compact backbone, with its key statistics."""

from __future__ import annotations

import time

import click
import jax
import numpy as np

from jaxlogit import batching, data, pipeline, training
from jaxlogit.cli._app import check_arch, cli, common_options


def summarize(y: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, success: np.ndarray,
              norm: np.ndarray) -> dict:
    """Accuracy before/after, success rate and norms of the successful examples."""
    fooled = norm[success] if success.any() else np.array([np.nan])
    return {
        "n": int(len(y)),
        "clean_accuracy": float(np.mean(clean_pred == y)),
        "adversarial_accuracy": float(np.mean(adv_pred == y)),
        "success_rate": float(np.mean(success)),
        "mean_norm": float(np.mean(fooled)),
        "median_norm": float(np.median(fooled)),
    }


@cli.command()
@click.option("--arch", required=True, help="A compact backbone (see `jaxlogit models`).")
@click.option("--attack", "attack_name", required=True, help="pgd, mim, deepfool or cw.")
@click.option("--n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Test images to attack.")
@click.option("--eps", type=float, default=16 / 255, show_default="16/255", help="L-inf budget of pgd/mim.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@common_options
def attack(arch, attack_name, n, eps, batch_size, seed, data_dir, cache_dir) -> None:
    """Attack the first N test images of Fashion-MNIST and report accuracy, success and norms."""
    check_arch(arch, compact_only=True)
    config = pipeline.AttackConfig(attack_name, eps=eps, seed=seed)
    backbone = training.ensure_backbone(training.default_config(arch), data_dir=data_dir, cache=cache_dir)
    split = data.load("fashion_mnist", "test", data_dir=data_dir)
    x, y = split.get_batch(np.arange(min(n, len(split))))
    logits_fn = backbone.logits_fn()
    key = jax.random.key(seed)

    @jax.jit
    def run(xb, yb):
        res = pipeline.run_attack(config, logits_fn, xb, yb, key=key)
        return logits_fn(xb).argmax(-1), res.logits.argmax(-1), res.success, res.norm

    start = time.perf_counter()
    clean_pred, adv_pred, success, norm = batching.map_batches(run, x, y, batch_size=batch_size)
    seconds = time.perf_counter() - start
    stats = summarize(y, clean_pred, adv_pred, success, norm)
    norm_name = "Linf" if attack_name in ("pgd", "mim") else "L2"
    click.echo(f"{config.label} on {arch}, {stats['n']} test images")
    click.echo(f"clean accuracy:       {stats['clean_accuracy']:.4f}")
    click.echo(f"adversarial accuracy: {stats['adversarial_accuracy']:.4f}")
    click.echo(f"success rate:         {stats['success_rate']:.4f}")
    click.echo(f"{norm_name} norm (fooled): mean {stats['mean_norm']:.4f}, median {stats['median_norm']:.4f}")
    click.echo(f"wall time:            {seconds:.1f} s (including compilation)")
