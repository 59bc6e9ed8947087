"""Section 5.1 and Appendix B in numbers: where each part of the supporting score points.

Command::

    python -m experiments.jacobian_stats               # writes runs/jacobian_stats-fashion_mnist/

For an attacked example with true class y and adversarial class a = argmax z*, the corrector's
Jacobian H (C x C) at z* gives the supporting score S_k = H_yk - H_mean,k (``explain``). Section
5.1 discusses its two parts separately: H_yk (raising z_k raises the true class's corrected
logit) and -H_mean,k (raising z_k lowers the corrected logits on average); Appendix B reads the
top S_k example by example. For each of H_yk, -H_mean,k and S_k this reports how often its top
class is the true class y and how often it is the adversarial class a, with Wilson 95%
intervals, over the images the attack fooled (stored ``success``):

- per backbone: Table 1's PGD 16/255 corrector (seed 0) on the full evaluation set;
- per attack: Table 2's correctors on the ResNet's selected set.

Reuses the cached stores and correctors (run Tables 1-2 first, or this makes them).

Expected on the default (README): under DeepFool the top ``S_k`` of a fooled image is the true
class for ~91% of them (the paper's Appendix B shape); under PGD and MIM it is the true class for
only 5-41% (by backbone) and the adversarial class about as often, ``-H_mean,k`` pointing to the
adversarial class more often than to the true one.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax.numpy as jnp
import numpy as np

from experiments import _common, _paper
from jaxlogit import explain, pipeline, stats

SCORES = ("H_yk", "-H_mean,k", "S_k")
HEADER = ["logits", "fooled images", *[f"top {s} = {c}" for s in SCORES for c in ("y", "a")]]


def score_parts(jacobians: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The three scores (N, C) from Jacobians (N, C, C) ``H[b, i, k]`` and true classes (N,)."""
    true_row = jacobians[np.arange(len(labels)), labels]
    negative_mean = -jacobians.mean(axis=1)
    return {"H_yk": true_row, "-H_mean,k": negative_mean, "S_k": true_row + negative_mean}


def top_classes(g_fn, logits: np.ndarray, labels: np.ndarray, chunk_size: int) -> dict[str, np.ndarray]:
    """Each score's top class (N,), from the Jacobians of blocks of rows (at most ~16M entries
    of ``H`` at a time: on ImageNet, C = 1,000, that is 16 rows)."""
    num_classes = logits.shape[-1]
    block = max(1, min(chunk_size, 2**24 // (num_classes * num_classes)))
    tops = {name: [] for name in SCORES}
    for start in range(0, len(labels), block):
        z = jnp.asarray(logits[start : start + block])
        jacobians = np.asarray(explain.jacobian(g_fn, z, chunk_size=block))
        for name, score in score_parts(jacobians, labels[start : start + block]).items():
            tops[name].append(score.argmax(-1))
    return {name: np.concatenate(t) if t else np.zeros(0, int) for name, t in tops.items()}


def top_class_shares(g_fn, logits: np.ndarray, labels: np.ndarray, chunk_size: int) -> dict:
    """For each score: the percent of rows whose top class is the true / the adversarial class."""
    adversarial = logits.argmax(-1)
    out = {"n": int(len(labels))}
    for name, top in top_classes(g_fn, logits, labels, chunk_size).items():
        out[name] = {
            "true": stats.accuracy(top == labels).rounded(),
            "adversarial": stats.accuracy(top == adversarial).rounded(),
        }
    return out


def fooled(rows) -> tuple[np.ndarray, np.ndarray]:
    """Adversarial logits (M, C) and labels (M,) of the rows whose attack succeeded."""
    keep = np.asarray(rows["success"], bool)
    return np.asarray(rows["adv_logits"])[keep], np.asarray(rows["labels"])[keep]


def per_backbone(setup: _common.Setup) -> dict[str, dict]:
    """Each backbone's PGD corrector on its full evaluation set's fooled images."""
    attack = pipeline.AttackConfig("pgd")
    out = {}
    for arch in setup.backbones:
        backbone = _common.load_backbone(setup, arch)
        corrector = _common.corrector_for(setup, backbone, attack)
        logits, labels = fooled(_common.logits(setup, backbone, attack, "test"))
        out[arch] = top_class_shares(corrector.g_fn(), logits, labels, setup.explain_batch)
    return out


def per_attack(setup: _common.Setup) -> dict[str, dict]:
    """The ResNet's corrector of each paper attack on the selected set's fooled images."""
    backbone = _common.load_backbone(setup, setup.resnet)
    out = {}
    for name in _paper.PAPER_ATTACKS:
        attack = pipeline.AttackConfig(name)
        corrector = _common.corrector_for(setup, backbone, attack)
        logits, labels = fooled(_common.selected_logits(setup, backbone, attack))
        out[f"{setup.resnet} {name}"] = top_class_shares(
            corrector.g_fn(), logits, labels, setup.explain_batch
        )
    return out


def table_rows(results: dict[str, dict]) -> list[list]:
    return [
        [name, r["n"], *[stats.format_estimate(r[s][c]) for s in SCORES for c in ("true", "adversarial")]]
        for name, r in results.items()
    ]


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Computes both tables, prints them and writes ``jacobian_stats.md``/``.json``."""
    backbones, attacks = per_backbone(setup), per_attack(setup)
    markdown = "\n\n".join(
        [
            f"## Where the supporting score points — {setup.dataset}: percent of fooled images whose top "
            "class of each score is the true class (y) or the adversarial class (a)",
            "Per backbone, PGD 16/255, full evaluation set:",
            _common.markdown_table(HEADER, table_rows(backbones)),
            f"Per attack, {setup.resnet}, selected set:",
            _common.markdown_table(HEADER, table_rows(attacks)),
            "Brackets: Wilson 95% intervals; seed 0's correctors.",
        ]
    )
    print(markdown)
    payload = {"setup": dataclasses.asdict(setup), "per_backbone": backbones, "per_attack": attacks}
    _common.write_report(out_dir, "jacobian_stats", markdown, payload)
    return markdown


main = _common.cli_main("jacobian_stats", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
