"""Ablation: two-layer (C -> 10,000 -> C) vs single-layer (C -> C) corrector, ResNet + PGD.

Command::

    python -m experiments.ablation                     # writes runs/ablation-fashion_mnist/

Both correctors are trained on the same PGD training logits with the same settings (see
``experiments.table1``), evaluated on the selected set. Paper (ResNet-50, ImageNet): 75.4%
vs 41.9% adversarial accuracy after correction. On 10 classes a linear map has far fewer
ways to be wrong than on 1,000, so expect a smaller gap.
"""

from __future__ import annotations

import dataclasses
import pathlib

from experiments import _common, _paper
from jaxlogit import pipeline

HEADER = ["corrector", "clean", "clean corrected", "PGD", "PGD corrected", "paper PGD corrected"]


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Trains (or loads) both correctors and compares them on the selected set."""
    backbone = _common.load_backbone(setup, setup.resnet)
    attack = pipeline.AttackConfig("pgd")
    rows_logits = _common.selected_logits(setup, backbone, attack)
    results = {}
    for name, hidden in (("two-layer", setup.corrector.hidden), ("single-layer", None)):
        config = dataclasses.replace(setup.corrector, hidden=hidden)
        corrector = _common.corrector_for(setup, backbone, attack, config)
        results[name] = _common.accuracies(rows_logits, corrector)
    rows = [
        [name, r["clean"], r["clean_corrected"], r["adv"], r["adv_corrected"], _paper.ABLATION[name]]
        for name, r in results.items()
    ]
    markdown = "\n\n".join(
        [
            f"## Ablation — {setup.dataset}, {setup.resnet} + PGD 16/255, selected set: accuracy (%)",
            _common.markdown_table(HEADER, rows),
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "ablation",
        markdown,
        {"setup": dataclasses.asdict(setup), "results": results, "paper": _paper.ABLATION},
    )
    return markdown


main = _common.cli_main("ablation", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
