"""Table 3: transfer — a corrector trained on one attack, evaluated on each attack (selected set).

Command::

    python -m experiments.table3                       # writes runs/table3-fashion_mnist/

Row = attack evaluated, column = attack the corrector was trained on; entries are the
corrected accuracy (%) on that attack's adversarial logits of the selected set. Reuses every
store and corrector of Table 2 from the cache (run it first, or this runs it).

Expected on the default: the diagonal is highest; L-inf attacks (PGD, MIM) transfer to each
other, L2 attacks (DeepFool, C&W) to each other, as in the paper.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from experiments import _common, _paper
from jaxlogit import pipeline


def transfer_matrix(setup: _common.Setup) -> np.ndarray:
    """(4, 4) percent accuracy: [evaluated attack, training attack]."""
    backbone = _common.load_backbone(setup, setup.resnet)
    attacks = [pipeline.AttackConfig(name) for name in _paper.PAPER_ATTACKS]
    correctors = [_common.corrector_for(setup, backbone, a) for a in attacks]
    matrix = np.zeros((len(attacks), len(attacks)))
    for i, evaluated in enumerate(attacks):
        rows = _common.selected_logits(setup, backbone, evaluated)
        for j, corrector in enumerate(correctors):
            matrix[i, j] = 100.0 * np.mean(corrector.predict_classes(rows["adv_logits"]) == rows["labels"])
    return matrix


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Computes Table 3, prints it next to the paper's, writes ``table3.md``/``.json``."""
    matrix = transfer_matrix(setup)
    names = list(_paper.PAPER_ATTACKS)
    header = ["evaluated \\ trained on", *names]
    ours = [[name, *[round(float(v), 2) for v in matrix[i]]] for i, name in enumerate(names)]
    paper = [[name, *_paper.TABLE3[name]] for name in names]
    markdown = "\n\n".join(
        [
            f"## Table 3 — {setup.dataset}, {setup.resnet}, selected set: corrected accuracy (%) under "
            "transfer",
            _common.markdown_table(header, ours),
            "Paper (ResNet-50, ImageNet):",
            _common.markdown_table(header, paper),
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "table3",
        markdown,
        {
            "setup": dataclasses.asdict(setup),
            "attacks": names,
            "matrix": matrix.tolist(),
            "paper": _paper.TABLE3,
        },
    )
    return markdown


main = _common.cli_main("table3", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
