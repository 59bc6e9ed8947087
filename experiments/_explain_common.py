"""What the explanation experiments share: per-attack correctors and logits, supporting
classes, bar charts with class names, rank correlation and the Figure 4 example rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from experiments import _common, _paper
from jaxlogit import explain, pipeline


class AttackLogits(NamedTuple):
    """One attack on the ResNet: its own corrector and the selected set's logits.

    Attributes:
      name: the attack (pgd, mim, deepfool, cw).
      g_fn: that attack's corrector, logits ``(B, C)`` -> corrected logits ``(B, C)``.
      rows: the selected set's ``clean_logits``/``adv_logits`` ``(N, C)``, ``labels`` ``(N,)``, ...
      explain_batch: logit rows per compiled call of the supporting scores (``Setup.explain_batch``).
    """

    name: str
    g_fn: Callable
    rows: Mapping[str, np.ndarray]
    explain_batch: int = explain.SCORES_CHUNK_SIZE


def load_attacks(setup: _common.Setup) -> dict[str, AttackLogits]:
    """Every attack of ``_paper.PAPER_ATTACKS`` with its corrector and selected-set logits (cached)."""
    backbone = _common.load_backbone(setup, setup.resnet)
    out = {}
    for name in _paper.PAPER_ATTACKS:
        attack = pipeline.AttackConfig(name)
        corrector = _common.corrector_for(setup, backbone, attack)
        rows = _common.selected_logits(setup, backbone, attack)
        out[name] = AttackLogits(name, corrector.g_fn(), rows, setup.explain_batch)
    return out


def class_names(setup: _common.Setup) -> tuple[str, ...]:
    """The evaluation split's class names, index ``i`` naming class ``i``."""
    return tuple(_common.load_split(setup, setup.test_split_name).class_names)


def k_note(num_classes: int) -> str:
    """One sentence saying which k is used and why (printed by every experiment)."""
    k = explain.scaled_k(num_classes)
    return (
        f"k = {k}: each example votes for its {k} largest S_k and the {k} most voted classes are reported "
        f"(the paper's k = 10 assumes C = 1000; with C = {num_classes}, k = "
        f"explain.scaled_k({num_classes}) = {k})."
    )


def supporting(
    g_fn: Callable, z: np.ndarray, y: np.ndarray, k: int, *, chunk_size: int = explain.SCORES_CHUNK_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` supporting classes of ``g_fn`` at logits ``z`` and their votes.

    Args:
      g_fn: logits ``(B, C)`` -> corrected logits ``(B, C)``.
      z: logits ``(B, C)`` (the adversarial logits of the selected set).
      y: true classes ``(B,)``.
      k: votes per example and classes returned.
      chunk_size: rows per compiled call (``--explain-batch``).

    Returns:
      ``(classes, counts)``: int ``(k,)`` most voted first, int ``(C,)`` votes of every class.
    """
    scores = explain.supporting_scores(g_fn, z, y, chunk_size=chunk_size)
    classes, counts = explain.supporting_classes(scores, per_example=k, top=k)
    return np.asarray(classes), np.asarray(counts)


def bar_chart(ax, labels: Sequence[str], values: Sequence[float], *, title: str, xlabel: str) -> None:
    """Horizontal bars, the first label on top, labels (class names) on the y axis."""
    positions = np.arange(len(labels))
    ax.barh(positions, values, color="tab:blue")
    ax.set_yticks(positions, labels=list(labels))
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(xlabel)


def bars_figure(panels: Mapping[str, tuple[Sequence[str], Sequence[float]]], *, xlabel: str):
    """One :func:`bar_chart` per entry ``title -> (labels, values)``, side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, (labels, values)) in zip(axes[0], panels.items()):
        bar_chart(ax, labels, values, title=title, xlabel=xlabel)
    fig.tight_layout()
    return fig


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    first = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(first) - 1  # tie group of each sorted position
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]  # exclusive
    mean_rank = (starts + ends + 1) / 2.0  # average of ranks start+1 .. end
    out = np.empty(len(values))
    out[order] = mean_rank[group]
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (ties averaged); NaN if either is constant."""
    rx, ry = ranks(x), ranks(y)
    if len(rx) != len(ry) or len(rx) < 2:
        raise ValueError(f"spearman needs two arrays of the same length >= 2, got {len(rx)} and {len(ry)}")
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else float("nan")


def choose_instance(fooled: np.ndarray, corrected: np.ndarray) -> tuple[int, bool]:
    """The Figure 4 example: the first one every attack fools and every corrector corrects.

    Args:
      fooled: bool ``(A, N)``, attack ``a`` changed the backbone's prediction of example ``n``.
      corrected: bool ``(A, N)``, attack ``a``'s corrector gives the true class back.

    Returns:
      ``(index, found)``: the first such example and True, else ``(0, False)``.
    """
    both = np.all(np.asarray(fooled) & np.asarray(corrected), axis=0)
    hits = np.flatnonzero(both)
    return (int(hits[0]), True) if len(hits) else (0, False)


def corrected_classes(g_fn: Callable, z: np.ndarray) -> np.ndarray:
    """``argmax g(z)``: int ``(B,)`` for logits ``(B, C)``."""
    return np.asarray(jnp.argmax(jax.jit(g_fn)(jnp.asarray(z)), axis=-1))


def finite_or_none(value: float) -> float | None:
    """``value``, or None if it is NaN (strict JSON has no NaN)."""
    return None if np.isnan(value) else float(value)
