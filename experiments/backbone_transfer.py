"""Cross-backbone transfer: a corrector trained on one backbone's logits, applied to another's.

Command::

    python -m experiments.backbone_transfer            # writes runs/backbone_transfer-fashion_mnist/

The paper's abstract claims that a corrector transfers across models. Each backbone's Table 1
corrector (PGD 16/255, seed 0, trained on that backbone's training logits) corrects every
backbone's PGD 16/255 and clean logits of the full evaluation set; row = backbone whose logits
are corrected, column = backbone whose logits trained the corrector, so the diagonal is Table
1's (seed 0). Every entry has its Wilson 95% interval. Reuses Table 1's stores and correctors
from the cache (run it first, or this makes them; nothing else is trained).

Expected on the default (README): no transfer. On PGD logits each corrector keeps 70-81% on its
own backbone and 5-25% on the others'; on clean logits another backbone's corrector gives 38-69%
where the backbones alone get ~91%. The abstract's claim does not hold for these compact backbones.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from experiments import _common
from jaxlogit import pipeline, stats

KINDS = {"adv_logits": "PGD 16/255", "clean_logits": "clean"}


def transfer(setup: _common.Setup) -> dict[str, list[list[stats.Estimate]]]:
    """Per kind of logits (``adv_logits``, ``clean_logits``): [corrected backbone][trained on]
    accuracy (%) with its Wilson interval, on the full evaluation set."""
    attack = pipeline.AttackConfig("pgd")
    backbones = {arch: _common.load_backbone(setup, arch) for arch in setup.backbones}
    correctors = [_common.corrector_for(setup, b, attack) for b in backbones.values()]
    out = {kind: [] for kind in KINDS}
    for backbone in backbones.values():
        test = _common.logits(setup, backbone, attack, "test")
        labels = np.asarray(test["labels"])
        for kind in KINDS:
            logits = np.asarray(test[kind])
            out[kind].append([stats.accuracy(c.predict_classes(logits) == labels) for c in correctors])
    return out


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Computes both matrices, prints them and writes ``backbone_transfer.md``/``.json``."""
    matrices = transfer(setup)
    names = list(setup.backbones)
    header = ["corrected \\ trained on", *names]
    sections = [f"## Cross-backbone transfer — {setup.dataset}, full evaluation set: corrected accuracy (%)"]
    for kind, title in KINDS.items():
        rows = [[n, *[stats.format_estimate(e) for e in row]] for n, row in zip(names, matrices[kind])]
        sections += [f"{title} logits:", _common.markdown_table(header, rows)]
    sections.append(
        "Brackets: Wilson 95% intervals; each backbone's PGD 16/255 corrector of Table 1 (seed 0)."
    )
    markdown = "\n\n".join(sections)
    print(markdown)
    payload = {
        "setup": dataclasses.asdict(setup),
        "backbones": names,
        **{kind: [[e.rounded() for e in row] for row in matrix] for kind, matrix in matrices.items()},
    }
    _common.write_report(out_dir, "backbone_transfer", markdown, payload)
    return markdown


main = _common.cli_main("backbone_transfer", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
