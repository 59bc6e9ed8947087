"""Ablation: two-layer (C -> 10,000 -> C) vs single-layer (C -> C) corrector, ResNet + PGD.

Command::

    python -m experiments.ablation                     # writes runs/ablation-fashion_mnist/

Both correctors are trained on the same PGD training logits with the same settings (see
``experiments.table1``), evaluated on the selected set. Paper (ResNet-50, ImageNet): 75.4%
vs 41.9% adversarial accuracy after correction. On 10 classes a linear map has far fewer
ways to be wrong than on 1,000, so expect a smaller gap (README: 76.4% vs 57.0%). Every
accuracy has its Wilson 95% interval, and the gap its paired bootstrap interval (seed 0).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import numpy as np

from experiments import _common, _paper
from jaxlogit import pipeline, stats

HEADER = ["corrector", "clean", "clean corrected", "PGD", "PGD corrected", "paper PGD corrected"]


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Trains (or loads) both correctors and compares them on the selected set."""
    backbone = _common.load_backbone(setup, setup.resnet)
    attack = pipeline.AttackConfig("pgd")
    rows_logits = _common.selected_logits(setup, backbone, attack)
    results, adv_correct = {}, {}
    for name, hidden in (("two-layer", setup.corrector.hidden), ("single-layer", None)):
        config = dataclasses.replace(setup.corrector, hidden=hidden)
        corrector = _common.corrector_for(setup, backbone, attack, config)
        results[name] = _common.accuracies(rows_logits, corrector)
        adv_correct[name] = corrector.predict_classes(rows_logits["adv_logits"]) == rows_logits["labels"]
    gap = stats.paired_bootstrap_difference(
        np.asarray(adv_correct["two-layer"]),
        np.asarray(adv_correct["single-layer"]),
        key=jax.random.key(_common.BOOTSTRAP_KEY),
    )
    keys = ("clean", "clean_corrected", "adv", "adv_corrected")
    rows = [[name, *[_common.cell(r, k) for k in keys], _paper.ABLATION[name]] for name, r in results.items()]
    markdown = "\n\n".join(
        [
            f"## Ablation — {setup.dataset}, {setup.resnet} + PGD 16/255, selected set: accuracy (%)",
            _common.markdown_table(HEADER, rows),
            f"Two-layer minus single-layer, PGD corrected: {_common.difference(gap.rounded())} points "
            f"(paper: {_paper.ABLATION['two-layer'] - _paper.ABLATION['single-layer']:.1f}). "
            + _common.INTERVALS_NOTE,
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "ablation",
        markdown,
        {
            "setup": dataclasses.asdict(setup),
            "results": results,
            "gap": gap.rounded(),
            "paper": _paper.ABLATION,
        },
    )
    return markdown


main = _common.cli_main("ablation", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
