"""``jaxlogit attack``: one attack on a compact backbone, with its key statistics."""

from __future__ import annotations

import dataclasses
import time

import click
import numpy as np

from jaxlogit import adaptive as adaptive_eval
from jaxlogit import data, pipeline, training
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


def summarize(
    y: np.ndarray, clean_pred: np.ndarray, adv_pred: np.ndarray, success: np.ndarray, norm: np.ndarray
) -> dict:
    """Counts of right predictions before/after and of successes, and norms of the successful examples."""
    fooled = norm[success] if success.any() else np.array([np.nan])
    return {
        "n": int(len(y)),
        "clean_correct": int(np.sum(clean_pred == y)),
        "adversarial_correct": int(np.sum(adv_pred == y)),
        "successes": int(np.sum(success)),
        "mean_norm": float(np.mean(fooled)),
        "median_norm": float(np.median(fooled)),
    }


@cli.command()
@click.option("--arch", required=True, help="A backbone of the dataset's kind (see `jaxlogit models`).")
@click.option(
    "--attack",
    "attack_name",
    required=True,
    type=AttackName(),
    help="A registered attack (jaxlogit.attacks), with the paper's settings.",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Test images to attack: the first N (imagenet: class-balanced, --subset-seed).",
)
@click.option(
    "--eps",
    type=float,
    default=16 / 255,
    show_default="16/255",
    help="Budget of the attacks that take one (pgd, mim: L-inf).",
)
@batch_option("attack", pipeline.AUTO, "Images per device per attack call", "--batch")
@batch_option("adaptive", None, "Adaptive: images per attack call (default: --attack-batch)")
@batch_option("corrector", pipeline.DEFAULT_CORRECTOR.batch_size, "Adaptive: the corrector's training batch")
@data_workers_option
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--adaptive",
    "adaptive_",
    is_flag=True,
    help="Also attack the defended model g∘f (the corrector trained for this attack) with adaptive "
    "PGD (cross-entropy, margin) and logit matching at --eps; report accuracy and detection AUC.",
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=100, show_default=True, help="Adaptive: steps per restart."
)
@click.option(
    "--restarts", type=click.IntRange(min=1), default=3, show_default=True, help="Adaptive: random restarts."
)
@click.option(
    "--precision",
    type=click.Choice(["float32", "bfloat16"]),
    default="float32",
    show_default=True,
    help="The backbone's compute dtype inside the attack (images, perturbation and projection stay float32).",
)
@dataset_option
@source_options
@common_options
def attack(
    arch,
    attack_name,
    n,
    eps,
    attack_batch,
    adaptive_batch,
    corrector_batch,
    data_workers,
    seed,
    adaptive_,
    steps,
    restarts,
    precision,
    dataset,
    weights_dir,
    image_size,
    subset_seed,
    data_dir,
    cache_dir,
) -> None:
    """Attack the first N evaluation images of --dataset (default Fashion-MNIST's test set) and
    report accuracy, success and norms.

    With --adaptive, the corrector trained on this attack's logits of 4,000 training images
    (cached, as `jaxlogit correct train` makes it) defends the backbone, and the attacks that
    know it (jaxlogit.adaptive) run on g∘f.
    """
    config = pipeline.AttackConfig(attack_name, eps=eps, seed=seed)
    backbone = trained_backbone(arch, dataset, data_dir, cache_dir, weights_dir=weights_dir)
    source = {"image_size": image_size, "subset_seed": subset_seed}
    split, _ = load_split(dataset, data.get(dataset).eval_split, data_dir, n, **source)
    n = min(n, len(split))
    if adaptive_ and np.unique(split.labels[:n]).size < 2:
        raise JaxlogitError(
            f"--adaptive needs images of at least two classes (logit matching), the first {n} test "
            f"image(s) hold {np.unique(split.labels[:n]).size}: raise --n"
        )
    logits_fn = backbone.logits_fn(compute_dtype=precision)

    batch_size = pipeline.attack_batch_size(  # never pad a few images to a huge batch
        attack_batch if attack_batch == pipeline.AUTO else min(attack_batch, n),
        logits_fn,
        config,
        split.image_shape,
        arch=arch,
        cap=pipeline.batch_cap(n),
    )
    start = time.perf_counter()  # as the logit stores attack: image i's key is fold_in(key(seed), i)
    out = pipeline.attack_split(  # streamed; the images stay in memory only for --adaptive
        logits_fn, config, split, n, batch_size=batch_size, workers=data_workers, keep_images=adaptive_
    )
    seconds = time.perf_counter() - start
    y = out.labels
    stats = summarize(y, out.clean_logits.argmax(-1), out.adv_logits.argmax(-1), out.success, out.norm)
    click.echo(f"{config.label} on {arch}, {stats['n']} test images")
    click.echo(f"clean accuracy:       {proportion(stats['clean_correct'], n)}")
    click.echo(f"adversarial accuracy: {proportion(stats['adversarial_correct'], n)}")
    click.echo(f"success rate:         {proportion(stats['successes'], n)}  (95% Wilson intervals)")
    click.echo(
        f"{config.spec.norm_label} norm (fooled): mean {stats['mean_norm']:.4f}, "
        f"median {stats['median_norm']:.4f}"
    )
    click.echo(f"wall time:            {seconds:.1f} s (including compilation)")
    if adaptive_:
        adaptive_batch = batch_size if adaptive_batch is None else min(adaptive_batch, len(y))
        config = adaptive_eval.AdaptiveConfig(
            eps=eps, steps=steps, restarts=restarts, seed=seed, batch_size=adaptive_batch
        )
        corrector = dataclasses.replace(pipeline.DEFAULT_CORRECTOR, batch_size=corrector_batch)
        batches = {"attack_batch": attack_batch, "corrector": corrector, "data_workers": data_workers}
        report_adaptive(
            backbone,
            config,
            out.images,
            y,
            out.adv_logits,
            attack_name,
            dataset,
            data_dir,
            cache_dir,
            **batches,
            **source,
        )


def report_adaptive(
    backbone: training.Backbone,
    config: adaptive_eval.AdaptiveConfig,
    x: np.ndarray,
    y: np.ndarray,
    oblivious_logits: np.ndarray,
    attack_name: str,
    dataset: str,
    data_dir,
    cache_dir,
    *,
    attack_batch: int | str = pipeline.AUTO,
    corrector: pipeline.CorrectorConfig = pipeline.DEFAULT_CORRECTOR,
    data_workers: int | None = None,
    image_size: int | None = None,
    subset_seed: int = 0,
) -> None:
    """Attacks g∘f adaptively and prints the defended accuracies and the detection AUCs; the
    corrector trained with ``corrector`` on logits attacked ``attack_batch`` images at a time
    (decoded by ``data_workers`` processes), of ``pipeline.DEFAULT_TRAIN_LIMIT`` training images
    (``image_size`` and ``subset_seed``: ``_app.load_split``)."""
    train_split, limit = load_split(
        dataset,
        data.get(dataset).train_split,
        data_dir,
        pipeline.DEFAULT_TRAIN_LIMIT,
        image_size=image_size,
        subset_seed=subset_seed,
    )
    trained = pipeline.corrector_for_attack(
        backbone,
        pipeline.AttackConfig(attack_name),
        train_split,
        corrector,
        limit=limit,
        cache=cache_dir,
        batch_size=attack_batch,
        data_workers=data_workers,
    )
    g = adaptive_eval.corrector_fn(trained.module, trained.params)
    start = time.perf_counter()
    ev = adaptive_eval.evaluate(
        backbone.logits_fn(), g, x, y, config=config, oblivious_logits=oblivious_logits
    )
    seconds = time.perf_counter() - start
    acc = adaptive_eval.accuracies(ev)
    detection = adaptive_eval.detection(ev)
    click.echo(f"\ndefended by the corrector trained on {attack_name} logits ({trained.directory.name})")
    click.echo(
        f"adaptive attacks on g∘f: Linf eps {config.eps * 255:g}/255, {config.steps} steps x "
        f"{config.restarts} restarts, step {config.step * 255:g}/255"
    )
    rows = [
        ("clean", "clean_corrected", None),
        ("oblivious attack (paper)", adaptive_eval.OBLIVIOUS, adaptive_eval.OBLIVIOUS),
    ]
    rows += [(f"adaptive {name}", name, name) for name in adaptive_eval.ADAPTIVE_ATTACKS]
    rows += [("worst case (all attacks)", adaptive_eval.WORST, adaptive_eval.WORST)]
    click.echo(f"{'defended accuracy':34s} {'':>8s}  detection AUC")
    for label, acc_key, det_key in rows:
        auc = f"{detection[det_key]['auc']:.3f}" if det_key else "-"
        click.echo(f"  {label:32s} {acc[acc_key] / 100:8.4f}  {auc}")
    click.echo(f"false flags on clean images:       {detection['clean']['flagged'] / 100:.4f}")
    click.echo(f"adaptive wall time:                {seconds:.1f} s (including compilation)")
