"""Figure 1: histogram (20 bins) of each evaluation image's mean logit, clean vs PGD.

Command::

    python -m experiments.figure1                      # writes runs/figure1-fashion_mnist/figure1.png

One panel per backbone, over the full evaluation set, from Table 1's cached PGD (16/255)
logit stores. The paper (ImageNet) finds that PGD raises the mean logit; the JSON gives the mean
of the per-image mean logit clean vs PGD so the claim can be checked. Expected on the default
(README): the claim does not carry over, PGD raises the mean logit of only ~44-62% of images.
"""

from __future__ import annotations

import dataclasses
import pathlib

import matplotlib.pyplot as plt
import numpy as np

from experiments import _common
from jaxlogit import pipeline

BINS = 20


def mean_logits(setup: _common.Setup, arch: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean logit (N,) of the clean and the PGD images."""
    backbone = _common.load_backbone(setup, arch)
    test = _common.logits(setup, backbone, pipeline.AttackConfig("pgd"), "test")
    return np.asarray(test["clean_logits"]).mean(-1), np.asarray(test["adv_logits"]).mean(-1)


def histogram_panel(ax, clean: np.ndarray, adv: np.ndarray, title: str) -> None:
    """Two 20-bin histograms on shared bins."""
    edges = np.histogram_bin_edges(np.concatenate([clean, adv]), bins=BINS)
    ax.hist(clean, bins=edges, alpha=0.6, label="clean")
    ax.hist(adv, bins=edges, alpha=0.6, label="PGD")
    ax.set_title(title)
    ax.set_xlabel("mean logit of an image")
    ax.legend()


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Draws the figure and writes ``figure1.png``/``.md``/``.json``."""
    fig, axes = plt.subplots(1, len(setup.backbones), figsize=(5 * len(setup.backbones), 3.6), squeeze=False)
    rows, stats = [], {}
    for ax, arch in zip(axes[0], setup.backbones):
        clean, adv = mean_logits(setup, arch)
        histogram_panel(ax, clean, adv, arch)
        stats[arch] = {
            "clean_mean": float(clean.mean()),
            "pgd_mean": float(adv.mean()),
            "share_raised": float(np.mean(adv > clean)),
        }
        rows.append(
            [arch, stats[arch]["clean_mean"], stats[arch]["pgd_mean"], 100 * stats[arch]["share_raised"]]
        )
    axes[0][0].set_ylabel("images")
    markdown = "\n\n".join(
        [
            f"## Figure 1 — {setup.dataset}: mean logit per image, clean vs PGD 16/255 (20 bins)",
            _common.markdown_table(["model", "mean (clean)", "mean (PGD)", "% images raised"], rows),
            "![figure 1](figure1.png)",
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "figure1",
        markdown,
        {"setup": dataclasses.asdict(setup), "stats": stats},
        figures={"figure1.png": fig},
    )
    plt.close(fig)
    return markdown


main = _common.cli_main("figure1", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
