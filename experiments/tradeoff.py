"""Trade-off: clean vs adversarial accuracy after correction as Algorithm 1's p varies.

Command::

    python -m experiments.tradeoff                     # writes runs/tradeoff-fashion_mnist/

Algorithm 1 feeds the corrector the clean logits with probability p (the paper: 0.3) and the
adversarial ones otherwise, so p sets how the corrector trades clean accuracy for recovered
adversarial accuracy. This trains one corrector per p of ``P_CLEAN`` on the ResNet's PGD
16/255 training logits (everything else as ``experiments.table1``; the p = 0.3 corrector is
Table 1's, cached) and evaluates each on the full test set. The paper reports only p = 0.3.

Expected on the default: clean accuracy after correction rises and PGD accuracy after
correction falls as p grows; no p keeps both within a few points of the backbone's clean
accuracy, because on 10 classes many PGD logits look like confident clean logits of another
class (see ``experiments.figure1``). Every accuracy has its Wilson 95% interval (seed 0).
"""

from __future__ import annotations

import dataclasses
import pathlib

from experiments import _common
from jaxlogit import pipeline

P_CLEAN = (0.1, 0.3, 0.5, 0.7, 0.9)
HEADER = [
    "p (clean fraction)",
    "clean",
    "clean corrected",
    "PGD",
    "PGD corrected",
    "mean corrected",
    "best epoch",
]


def tradeoff_row(setup: _common.Setup, backbone, attack: pipeline.AttackConfig, p_clean: float) -> dict:
    """Test-set accuracies (%) of the corrector trained with clean fraction ``p_clean``."""
    config = dataclasses.replace(setup.corrector, p_clean=p_clean)
    corrector = _common.corrector_for(setup, backbone, attack, config)
    result = _common.accuracies(_common.logits(setup, backbone, attack, "test"), corrector)
    mean = round((result["clean_corrected"] + result["adv_corrected"]) / 2, 2)
    return {"p_clean": p_clean, **result, "mean_corrected": mean, "best_epoch": corrector.meta["best_epoch"]}


def run(setup: _common.Setup, out_dir: pathlib.Path, p_values: tuple[float, ...] = P_CLEAN) -> str:
    """Trains (or loads) one corrector per p and tabulates clean vs PGD accuracy after correction."""
    backbone = _common.load_backbone(setup, setup.resnet)
    attack = pipeline.AttackConfig("pgd")
    results = [tradeoff_row(setup, backbone, attack, p) for p in p_values]
    rows = [
        [
            f"{r['p_clean']:g}" + (" (paper)" if r["p_clean"] == 0.3 else ""),
            *[_common.cell(r, k) for k in ("clean", "clean_corrected", "adv", "adv_corrected")],
            r["mean_corrected"],
            r["best_epoch"],
        ]
        for r in results
    ]
    markdown = "\n\n".join(
        [
            f"## Trade-off — {setup.dataset}, {setup.resnet} + PGD 16/255, full test set: accuracy (%) "
            "as Algorithm 1's clean fraction p varies",
            _common.markdown_table(HEADER, rows),
            _common.INTERVALS_NOTE,
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir, "tradeoff", markdown, {"setup": dataclasses.asdict(setup), "results": results}
    )
    return markdown


main = _common.cli_main("tradeoff", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
