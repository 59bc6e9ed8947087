"""``jaxlogit explain``: the supporting classes of a trained corrector, with names and votes."""

from __future__ import annotations

import click
import numpy as np

from jaxlogit import data, explain, pipeline
from jaxlogit.cli._app import batch_option, cli, common_options, trained_backbone
from jaxlogit.cli._correct import _corrector, attack_options, corrector_options

SELECTING_ARCH = "resnet_compact"
"""The backbone whose correct predictions define the selected set (the paper's ResNet-50)."""
SELECTING_ARCHS = {data.COMPACT: SELECTING_ARCH, data.IMAGENET: "resnet50"}
"""The selecting backbone of each backbone kind."""


def vote_table(classes: np.ndarray, counts: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Aligned lines ``rank  class  name  votes  share`` for the supporting ``classes``."""
    total = max(int(counts.sum()), 1)
    width = max(len("name"), *(len(names[c]) for c in classes))
    lines = [f"{'rank':>4}  {'class':>5}  {'name':<{width}}  {'votes':>6}  {'share':>6}"]
    lines += [
        f"{rank:>4}  {c:>5}  {names[c]:<{width}}  {int(counts[c]):>6}  {100 * counts[c] / total:>5.1f}%"
        for rank, c in enumerate(classes.tolist(), start=1)
    ]
    return lines


def _check_k(name: str, value: int | None, num_classes: int) -> int:
    if value is None:
        return explain.scaled_k(num_classes)
    if value > num_classes:
        raise click.BadParameter(f"{value} exceeds the {num_classes} classes", param_hint=name)
    return value


@cli.command("explain")
@attack_options
@click.option(
    "--per-example",
    type=click.IntRange(min=1),
    default=None,
    help="Classes each example votes for (default: explain.scaled_k(C), 3 of 10 classes).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=None,
    help="Supporting classes to list (default: explain.scaled_k(C)).",
)
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Images per class in the selected set (correctly classified by resnet_compact; imagenet: resnet50).",
)
@corrector_options
@batch_option("predict", pipeline.AUTO, "Images per device per prediction call (the selected set)")
@batch_option("explain", explain.SCORES_CHUNK_SIZE, "Logit rows per supporting-score call")
@common_options
def explain_cmd(
    arch,
    attack_name,
    eps,
    dataset,
    attack_batch,
    data_workers,
    per_example,
    top,
    per_class,
    limit,
    epochs,
    hidden,
    lr,
    seed,
    corrector_batch,
    predict_batch,
    explain_batch,
    data_dir,
    cache_dir,
    weights_dir,
    image_size,
    subset_seed,
    holdout,
    depth,
) -> None:
    """Supporting classes of the corrector trained on ATTACK: votes of the largest S_k over the
    selected test set's adversarial logits (the paper's Figures 2-3)."""
    backbone = trained_backbone(arch, dataset, data_dir, cache_dir, weights_dir=weights_dir)
    num_classes = int(backbone.meta["num_classes"])
    per_example = _check_k("--per-example", per_example, num_classes)
    top = _check_k("--top", top, num_classes)
    trained = _corrector(**click.get_current_context().params)
    split_name = data.get(dataset).eval_split
    split = data.load(dataset, split_name, data_dir=data_dir, image_size=image_size)
    selecting = SELECTING_ARCHS[data.get(dataset).backbones]
    selector = (
        backbone
        if arch == selecting
        else trained_backbone(selecting, dataset, data_dir, cache_dir, weights_dir=weights_dir)
    )
    indices = pipeline.selected_indices(
        selector,
        split,
        per_class=per_class,
        cache=cache_dir,
        batch_size=predict_batch,
        data_workers=data_workers,
    )
    rows = pipeline.selected_logits(
        backbone,
        pipeline.AttackConfig(attack_name, eps=eps),
        split,
        split_name,
        indices,
        cache=cache_dir,
        batch_size=attack_batch,
        data_workers=data_workers,
    )
    scores = explain.supporting_scores(
        trained.g_fn(), rows["adv_logits"], rows["labels"], chunk_size=explain_batch
    )
    classes, counts = explain.supporting_classes(scores, per_example=per_example, top=top)
    click.echo(
        f"supporting classes of the {attack_name} corrector on {arch}: {len(indices)} selected test images, "
        f"adversarial logits"
    )
    click.echo(
        f"each image votes for its {per_example} largest S_k; top {top} shown "
        f"(the paper's 10 assumes 1000 classes; default here explain.scaled_k({num_classes}) = "
        f"{explain.scaled_k(num_classes)})"
    )
    for line in vote_table(np.asarray(classes), np.asarray(counts), split.class_names):
        click.echo(line)
