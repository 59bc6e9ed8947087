"""Corrector training curves: held-out accuracy after every epoch, per corrector.

Command::

    python -m experiments.training_curves              # writes runs/training_curves-fashion_mnist/

For Table 1's correctors (each backbone, PGD 16/255) and Table 2's (the ResNet, each of the
paper's attacks), seed 0: the accuracy on the held-out *training* logits (clean and adversarial
rows together) after each epoch, which picks the kept epoch (``best_epoch``). One panel per
corrector in ``training_curves.png``; the table gives the best epoch and the held-out accuracy
there and at the last epoch, with Wilson 95% intervals. Reads the correctors' saved history from
the cache (run Tables 1-2 first, or this trains them).

Expected on the default (README): the held-out accuracy climbs for ~50 epochs and then wanders
within ~2-4 points; the best epoch is 57-148 of 150 and the last epoch is 1-3 points below it
(the noise of 800 held-out rows is ±3 points).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from experiments import _common, _paper
from jaxlogit import pipeline

HEADER = ["corrector", "epochs", "best epoch", "held-out acc. at best", "held-out acc. at last"]


def correctors(setup: _common.Setup) -> dict[str, pipeline.TrainedCorrector]:
    """Name -> Table 1's and Table 2's seed-0 correctors (cached)."""
    out = {}
    for arch in setup.backbones:
        backbone = _common.load_backbone(setup, arch)
        out[f"{arch} pgd"] = _common.corrector_for(setup, backbone, pipeline.AttackConfig("pgd"))
    resnet = _common.load_backbone(setup, setup.resnet)
    for name in _paper.PAPER_ATTACKS[1:]:
        out[f"{setup.resnet} {name}"] = _common.corrector_for(setup, resnet, pipeline.AttackConfig(name))
    return out


def holdout_rows(setup: _common.Setup, train_images: int) -> int:
    """Rows of the held-out evaluation set (``corrector.holdout_split``): the clean and the
    adversarial logits of the held-out share of the first ``train_limit`` of ``train_images``."""
    total = train_images if setup.train_limit is None else min(setup.train_limit, train_images)
    fraction = setup.corrector.holdout_fraction
    return 2 * (0 if fraction == 0 else max(1, round(fraction * total)))


def curve_row(name: str, curve: np.ndarray, best_epoch: int, n: int) -> list:
    """A table row: epochs, best epoch, held-out accuracy (%) at the best and the last epoch."""
    return [
        name,
        len(curve),
        best_epoch,
        _common.percent_cell(100 * curve[best_epoch - 1], n),
        _common.percent_cell(100 * curve[-1], n),
    ]


def plot(curves: dict[str, np.ndarray], best: dict[str, int]):
    """One panel per corrector: held-out accuracy per epoch, the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.2 * len(curves), 2.8), squeeze=False)
    for ax, (name, curve) in zip(axes[0], curves.items()):
        ax.plot(np.arange(1, len(curve) + 1), 100 * curve, "C0-")
        ax.axvline(best[name], color="C3", ls=":")
        ax.set(title=name, xlabel="epoch", ylabel="held-out accuracy (%)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Reads every corrector's history, tabulates and plots it, writes ``training_curves.*``."""
    trained = correctors(setup)
    curves = {name: np.asarray(c.meta["holdout_accuracy"], np.float64) for name, c in trained.items()}
    best = {name: int(c.meta["best_epoch"]) for name, c in trained.items()}
    n = holdout_rows(setup, len(_common.load_split(setup, setup.train_split_name)))
    rows = [curve_row(name, curves[name], best[name], n) for name in trained]
    markdown = "\n\n".join(
        [
            f"## Corrector training curves — {setup.dataset}: held-out training logits, accuracy (%)",
            _common.markdown_table(HEADER, rows),
            f"Held-out set: {n} logit rows (clean and adversarial); brackets: Wilson 95% intervals. "
            "Curves: `training_curves.png`.",
        ]
    )
    print(markdown)
    payload = {
        "setup": dataclasses.asdict(setup),
        "holdout_rows": n,
        "curves": {name: curve.tolist() for name, curve in curves.items()},
        "best_epoch": best,
    }
    _common.write_report(
        out_dir, "training_curves", markdown, payload, {"training_curves.png": plot(curves, best)}
    )
    return markdown


main = _common.cli_main("training_curves", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
