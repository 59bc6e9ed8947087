"""Table 2: the ResNet backbone, the four attacks, selected set, without / with correction.

Command::

    python -m experiments.table2                       # writes runs/table2-fashion_mnist/
    python -m experiments.table2 --dataset imagenet --data-dir TFDS_DIR --weights-dir CONVERTED

Each attack has its own corrector, trained on that attack's logits of the training subset
(same deviations as ``experiments.table1``: 4,000 training images, lr 1e-3, 150 epochs), where
the attack succeeded (a failed row gives its clean logits to both draws). Reuses Table 1's PGD
store and correctors from the cache. Attacks use the paper's settings (SPEC.md); on 10 classes
DeepFool's 10 candidates are all classes. On compact backbones, where the paper's C&W (lr 0.01,
25 steps) fools fewer than 99% of a probe of 500 training images, a row ``cw lr=... steps=...``
follows it: the cheapest setting of ``experiments._probe.CW_GRID`` that fools >= 99% of that
probe (on Fashion-MNIST the paper's setting fools ~66%: the black background sits in the tanh
box's flat region).

Every accuracy has its 95% interval (Wilson); each corrected one is the mean ± sd of
``--seeds`` correctors (default 3); "fooled" is the share of the selected images the attack
fooled (stored ``success``), followed by the corrected accuracy on those images only.

Expected on the default (README): PGD, DeepFool and C&W leave <= 0.1%, MIM ~2%, the paper's C&W
~34%; correction brings PGD and MIM back to ~73-76% and DeepFool and C&W to ~81-83%: unlike the
paper (76.1% and 66.8%), the minimal-norm attacks are recovered *more* than PGD/MIM here, and
clean accuracy drops less under their correctors (92-95% against 81-87%).
"""

from __future__ import annotations

import dataclasses
import pathlib

from experiments import _common, _paper, _probe
from jaxlogit import pipeline

HEADER = [
    "attack",
    "clean",
    "corrected",
    "adversarial",
    "corrected",
    "fooled",
    "corrected (fooled only)",
    "paper clean",
    "paper corrected",
    "paper adv",
    "paper adv corrected",
]


def attack_row(setup: _common.Setup, attack: pipeline.AttackConfig) -> dict:
    """Selected-set accuracies of the ResNet under ``attack`` with its own correctors
    (``setup.seeds`` of them: ``_common.seed_accuracies``)."""
    backbone = _common.load_backbone(setup, setup.resnet)
    correctors = _common.correctors_for(setup, backbone, attack)
    rows = _common.selected_logits(setup, backbone, attack)
    return {
        "attack": attack.name,
        "label": attack.label,
        "settings": attack.cache_key(),
        "paper_setting": attack.lr is None and attack.steps is None,
        **_common.seed_accuracies(rows, correctors),
    }


def format_row(r: dict) -> list:
    """A Markdown row: our accuracies with intervals, then the paper's (its setting only)."""
    ours = [_common.cell(r, name) for name in ("clean", "clean_corrected", "adv", "adv_corrected")]
    fooled = f"{r['attacked']['share']:.1f} ({r['attacked']['n']})"
    paper = _paper.TABLE2[r["attack"]] if r["paper_setting"] else ("-",) * 4
    return [r["label"], *ours, fooled, _common.cell(r["attacked"], "adv_corrected"), *paper]


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Computes Table 2 (cached steps), prints it and writes ``table2.md``/``.json``."""
    paper = [pipeline.AttackConfig(name) for name in _paper.PAPER_ATTACKS]
    results = [attack_row(setup, attack) for attack in paper]
    # After the paper's rows: the probe of the paper's C&W then reads its cached training store.
    results += [attack_row(setup, attack) for attack in _probe.table_attacks(setup)[len(paper) :]]
    rows = [format_row(r) for r in results]
    markdown = "\n\n".join(
        [
            f"## Table 2 — {setup.dataset}, {setup.resnet}, selected set: accuracy (%) per attack",
            _common.markdown_table(HEADER, rows),
            _common.INTERVALS_NOTE,
            f"Corrected: mean ± sd over {setup.seeds} seed(s). Paper columns: ResNet-50 on ImageNet, "
            "for reference (the paper's settings only).",
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "table2",
        markdown,
        {"setup": dataclasses.asdict(setup), "rows": results, "paper": _paper.TABLE2},
    )
    return markdown


main = _common.cli_main("table2", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
