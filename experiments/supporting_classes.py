"""Figures 2 and 3: the most frequent supporting classes of each attack's corrector (ResNet, selected set).

Command::

    python -m experiments.supporting_classes           # writes runs/supporting_classes-fashion_mnist/

For each attack, its own corrector (Table 2) is differentiated at the selected set's
adversarial logits; every example votes for the k classes with the largest
``S_k = H[y, k] - mean_l H[l, k]`` and the k most voted classes are drawn as a bar chart with
class names (``supporting_ATTACK.png``). The paper's k = 10 assumes 1,000 classes; k scales
with C through ``explain.scaled_k`` (3 of 10 on the default, 10 on ImageNet) and the output says so.
Reuses Table 2's correctors and logits from the cache.

Expected: on ImageNet the paper finds one class ("manhole cover") dominating PGD and MIM.
On 10 classes the counts are spread over few classes, and all four attacks' distributions
overlap strongly (README: Bhattacharyya 0.970-0.995, paper 0.86-0.97), so the paper's split
between the L-inf (PGD, MIM) and L2 (DeepFool, C&W) attacks is weak here;
``experiments.bhattacharyya`` quantifies it.
"""

from __future__ import annotations

import dataclasses
import pathlib

import matplotlib.pyplot as plt

from experiments import _common
from experiments import _explain_common as ec
from jaxlogit import explain


def attack_supporting(attack: ec.AttackLogits, k: int, names: tuple[str, ...]) -> dict:
    """The supporting classes of one attack, as JSON-ready values."""
    rows = attack.rows
    classes, counts = ec.supporting(
        attack.g_fn, rows["adv_logits"], rows["labels"], k, chunk_size=attack.explain_batch
    )
    total = int(counts.sum())
    return {
        "classes": classes.tolist(),
        "names": [names[c] for c in classes],
        "votes": [int(counts[c]) for c in classes],
        "share": [round(100.0 * float(counts[c]) / total, 2) for c in classes],
        "counts": counts.tolist(),
        "examples": int(len(rows["labels"])),
    }


def figure(name: str, result: dict):
    """The bar chart of one attack: votes per supporting class, class names on the axis."""
    return ec.bars_figure({f"supporting classes: {name}": (result["names"], result["votes"])}, xlabel="votes")


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Computes every attack's supporting classes, draws them, writes ``supporting_classes.*``."""
    names = ec.class_names(setup)
    k = explain.scaled_k(len(names))
    results = {name: attack_supporting(a, k, names) for name, a in ec.load_attacks(setup).items()}
    rows = [
        [name, rank + 1, r["names"][rank], r["classes"][rank], r["votes"][rank], r["share"][rank]]
        for name, r in results.items()
        for rank in range(k)
    ]
    figures = {f"supporting_{name}.png": figure(name, r) for name, r in results.items()}
    markdown = "\n\n".join(
        [
            f"## Figures 2-3 — {setup.dataset}, {setup.resnet}, selected set: supporting classes per attack",
            ec.k_note(len(names)),
            _common.markdown_table(["attack", "rank", "class", "index", "votes", "% of votes"], rows),
            " ".join(f"![{name}](supporting_{name}.png)" for name in results),
            "Paper (ResNet-50, ImageNet, k = 10): class 640 'manhole cover' dominates PGD and MIM.",
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "supporting_classes",
        markdown,
        {"setup": dataclasses.asdict(setup), "k": k, "class_names": list(names), "attacks": results},
        figures=figures,
    )
    for fig in figures.values():
        plt.close(fig)
    return markdown


main = _common.cli_main("supporting_classes", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
