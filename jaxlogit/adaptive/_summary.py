"""Numbers from an ``Evaluation``: accuracy per attack and worst case, step curves, detection."""

from __future__ import annotations

import numpy as np

from jaxlogit.adaptive._detect import detection_scores, flagged, roc_auc
from jaxlogit.adaptive._evaluate import OBLIVIOUS, Candidate, Evaluation

WORST = "worst_case"
ADAPTIVE_WORST = "adaptive_only"


def fooled(candidate: Candidate, labels: np.ndarray) -> np.ndarray:
    """(N,) bool: the defended model misclassifies the candidate's example."""
    return np.argmax(candidate.corrected_logits, axis=-1) != labels


def _pct(mask: np.ndarray) -> float:
    return round(100.0 * float(np.mean(mask)), 2) if mask.size else float("nan")


def robust_masks(ev: Evaluation) -> dict[str, np.ndarray]:
    """(N,) bool per attack: the defended model stays right; plus the worst cases.

    ``worst_case``: right under *every* attack (oblivious included), the defense's honest
    number. ``adaptive_only``: right under every adaptive attack.
    """
    masks = {name: ~fooled(c, ev.labels) for name, c in ev.attacks.items()}
    adaptive = [m for name, m in masks.items() if name != OBLIVIOUS]
    if adaptive:
        masks[ADAPTIVE_WORST] = np.logical_and.reduce(adaptive)
    masks[WORST] = np.logical_and.reduce(list(masks.values())) if masks else np.ones(len(ev.labels), bool)
    return masks


def accuracies(ev: Evaluation) -> dict[str, float]:
    """Percent accuracy: clean (backbone, corrected), backbone under the oblivious attack (no
    defense), and the defended model under each attack and the worst cases."""
    out = {
        "clean": _pct(np.argmax(ev.clean.backbone_logits, -1) == ev.labels),
        "clean_corrected": _pct(~fooled(ev.clean, ev.labels)),
    }
    if OBLIVIOUS in ev.attacks:
        out["no_defense"] = _pct(np.argmax(ev.attacks[OBLIVIOUS].backbone_logits, -1) == ev.labels)
    out.update({name: _pct(mask) for name, mask in robust_masks(ev).items()})
    return out


def steps_curve(ev: Evaluation, budgets: list[int]) -> dict[int, float]:
    """Worst-case accuracy (%) if every adaptive attack stopped after ``s`` gradient steps.

    Non-increasing in ``s`` by construction: a sample fooled within ``s`` steps stays fooled.
    """
    curve = {}
    for s in budgets:
        robust = np.ones(len(ev.labels), bool)
        for candidate in ev.attacks.values():
            robust &= ~((candidate.first_success >= 0) & (candidate.first_success <= s))
        curve[int(s)] = _pct(robust)
    return curve


def _scores(candidate: Candidate) -> np.ndarray:
    return detection_scores(candidate.backbone_logits, candidate.corrected_logits)


def _flags(candidate: Candidate) -> np.ndarray:
    return flagged(candidate.backbone_logits, candidate.corrected_logits)


def detection(ev: Evaluation) -> dict[str, dict[str, float]]:
    """ROC AUC of the detection score, clean vs each attack's examples, and flag rates.

    ``worst_case`` takes per sample the attacker's best example: among the examples that fool
    the defended model the least suspicious one, or the least suspicious of all if none does.

    Uses the backbone and corrected logits ``ev`` already holds for every example.

    Args:
      ev: the evaluation.

    Returns:
      name -> ``{"auc", "flagged"}``; ``"clean"`` -> ``{"flagged"}`` (the false-flag rate, %).
    """
    negatives = _scores(ev.clean)
    out = {"clean": {"flagged": _pct(_flags(ev.clean))}}
    scores, flags, fools = [], [], []
    for name, candidate in ev.attacks.items():
        s, f = _scores(candidate), _flags(candidate)
        out[name] = {"auc": round(roc_auc(negatives, s), 4), "flagged": _pct(f)}
        scores.append(s), flags.append(f), fools.append(fooled(candidate, ev.labels))
    if scores:
        scores, flags, fools = np.stack(scores), np.stack(flags), np.stack(fools)
        any_fool = fools.any(axis=0)
        eligible = np.where(any_fool[None, :], fools, True)
        choice = np.argmin(np.where(eligible, scores, np.inf), axis=0)
        columns = np.arange(scores.shape[1])
        out[WORST] = {
            "auc": round(roc_auc(negatives, scores[choice, columns]), 4),
            "flagged": _pct(flags[choice, columns]),
        }
    return out
