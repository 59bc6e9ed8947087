"""Honest evaluation of the logit corrector: adaptive white-box attacks on g∘f, and detection.

The paper attacks only the backbone ``f`` (an *oblivious* attack). An adaptive attacker knows
the corrector ``g`` too and attacks the composed model ``g∘f`` (Tramèr et al. 2020, "On Adaptive
Attacks to Adversarial Example Defenses"):

- ``pgd_ce`` / ``pgd_margin``: L-inf PGD on the cross-entropy / C&W margin of ``g(f(x))``;
- ``logit_matching``: pull ``f(x')`` to the clean logits of the nearest image of another class,
  so the corrector sees clean-looking logits of the wrong class;
- the worst case: a sample is robust only if every attack (oblivious included) fails.

Example::

    from jaxlogit import adaptive

    g = adaptive.corrector_fn(trained.module, trained.params)
    ev = adaptive.evaluate(backbone.logits_fn(), g, x, y, config=adaptive.AdaptiveConfig(),
                           oblivious_logits=store_adv_logits)
    adaptive.accuracies(ev)      # {"no_defense": ..., "oblivious": ..., "pgd_ce": ..., "worst_case": ...}
"""

from jaxlogit.adaptive._compose import compose
from jaxlogit.adaptive._detect import average_ranks, detection_scores, flagged, roc_auc
from jaxlogit.adaptive._evaluate import (
    ADAPTIVE_ATTACKS,
    OBLIVIOUS,
    Candidate,
    Evaluation,
    adaptive_attack,
    evaluate,
)
from jaxlogit.adaptive._objectives import LogitMatching, logit_matching, loss_on_defended, matching_targets
from jaxlogit.adaptive._run import AdaptiveConfig, run_objective
from jaxlogit.adaptive._summary import (
    ADAPTIVE_WORST,
    WORST,
    accuracies,
    detection,
    fooled,
    robust_masks,
    steps_curve,
)
from jaxlogit.corrector import eval_fn as corrector_fn  # the eval-mode corrector, under its public name here

__all__ = [
    "ADAPTIVE_ATTACKS",
    "ADAPTIVE_WORST",
    "OBLIVIOUS",
    "WORST",
    "AdaptiveConfig",
    "Candidate",
    "Evaluation",
    "LogitMatching",
    "accuracies",
    "adaptive_attack",
    "average_ranks",
    "compose",
    "corrector_fn",
    "detection",
    "detection_scores",
    "evaluate",
    "flagged",
    "fooled",
    "logit_matching",
    "loss_on_defended",
    "matching_targets",
    "robust_masks",
    "roc_auc",
    "run_objective",
    "steps_curve",
]
