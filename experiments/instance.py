"""Figure 4: the top-k supporting scores S_k of one selected example under each of the four attacks.

Command::

    python -m experiments.instance                     # writes runs/instance-fashion_mnist/instance.png

The example is the first of the selected set (lowest index) that every attack fools and every
attack's own corrector corrects; if there is none, the first selected example (the output says
which rule applied). For each attack, ``S_k = H[y, k] - mean_l H[l, k]`` of that attack's
corrector at that attack's adversarial logits; the k largest are drawn with class names, one
panel per attack. k scales with C through ``explain.scaled_k`` (3 of 10 on the default, the
paper's 10 on ImageNet). Reuses Table 2's correctors and logits from the cache.

The paper: the supporting classes of one example differ between attacks, PGD and MIM sharing
more of them than the L-inf and L2 attacks do. Expected on the default (README): test image 1,
a Pullover that all four attacks turn into Shirt and all four correctors restore.
"""

from __future__ import annotations

import dataclasses
import pathlib

import matplotlib.pyplot as plt
import numpy as np

from experiments import _common
from experiments import _explain_common as ec
from jaxlogit import explain


def pick_example(attacks: dict[str, ec.AttackLogits]) -> tuple[int, bool]:
    """``choose_instance`` on the selected set: (row, whether every attack fools and is corrected)."""
    fooled, corrected = [], []
    for a in attacks.values():
        adv, labels = a.rows["adv_logits"], a.rows["labels"]
        fooled.append(adv.argmax(-1) != labels)
        corrected.append(ec.corrected_classes(a.g_fn, adv) == labels)
    return ec.choose_instance(np.stack(fooled), np.stack(corrected))


def example_scores(attacks: dict[str, ec.AttackLogits], row: int, k: int, names: tuple[str, ...]) -> dict:
    """Per attack: the adversarial and corrected class and the top-k ``S_k`` of example ``row``."""
    out = {}
    for name, a in attacks.items():
        z, y = a.rows["adv_logits"][row], int(a.rows["labels"][row])
        top = explain.instance_scores(a.g_fn, {name: z}, y, k)[name]
        out[name] = {
            "adversarial": names[int(z.argmax())],
            "corrected": names[int(ec.corrected_classes(a.g_fn, z[None])[0])],
            "classes": np.asarray(top.classes).tolist(),
            "names": [names[c] for c in np.asarray(top.classes)],
            "scores": [round(float(s), 4) for s in np.asarray(top.scores)],
        }
    return out


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Picks the example, computes its scores per attack, draws Figure 4, writes ``instance.*``."""
    names = ec.class_names(setup)
    k = explain.scaled_k(len(names))
    attacks = ec.load_attacks(setup)
    row, found = pick_example(attacks)
    label = int(next(iter(attacks.values())).rows["labels"][row])
    image = int(_common.selected_indices(setup)[row])
    scores = example_scores(attacks, row, k, names)
    fig = ec.bars_figure(
        {f"{name} (adv: {s['adversarial']})": (s["names"], s["scores"]) for name, s in scores.items()},
        xlabel="S_k",
    )
    rule = (
        "the first selected example every attack fools and every corrector corrects"
        if found
        else "no selected example is fooled by every attack and corrected by every corrector: the first one"
    )
    table = [
        [name, s["adversarial"], s["corrected"], rank + 1, s["names"][rank], s["scores"][rank]]
        for name, s in scores.items()
        for rank in range(k)
    ]
    markdown = "\n\n".join(
        [
            f"## Figure 4 — {setup.dataset}, {setup.resnet}: selected example {row} = test image {image} "
            f"(true class '{names[label]}')",
            f"Example: {rule}. Each attack's own corrector. " + ec.k_note(len(names)),
            _common.markdown_table(
                ["attack", "adversarial class", "corrected class", "rank", "class", "S_k"], table
            ),
            "![figure 4](instance.png)",
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "instance",
        markdown,
        {
            "setup": dataclasses.asdict(setup),
            "k": k,
            "row": row,
            "image": image,
            "rule_met": found,
            "true_class": names[label],
            "attacks": scores,
        },
        figures={"instance.png": fig},
    )
    plt.close(fig)
    return markdown


main = _common.cli_main("instance", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
