"""Overlap of the attacks' supporting classes (Bhattacharyya) against transfer (Table 3).

Command::

    python -m experiments.bhattacharyya                # writes runs/bhattacharyya-fashion_mnist/

Each attack's supporting-class vote counts (as in ``experiments.supporting_classes``, k scaled
with C by ``explain.scaled_k``) give a distribution over the classes; the 4 x 4 matrix holds the
Bhattacharyya coefficient of every pair. Beside it, Table 3's transfer matrix
(``experiments.table3.transfer_matrix``: row = attack evaluated, column = corrector's attack)
and the Spearman rank correlation between overlap and transfer accuracy over the off-diagonal
entries: the 12 ordered pairs, the 6 unordered pairs (transfer averaged over both directions)
and the paper's 4 pairs. Reuses Table 2-3's correctors and logits from the cache.

Expected: the paper (ResNet-50, ImageNet) has PGD-MIM 0.9662 > DeepFool-C&W 0.9222 >
PGD-DeepFool 0.9004 > PGD-C&W 0.8623, the same order as their mean transfer, so its rank
correlation over those 4 pairs is 1.0. Expected on the default (README): every pair overlaps
strongly (0.970-0.995), so overlap separates transfer far less; the rank correlation over the 12
ordered pairs is positive (~0.7), and the L2 pair (DeepFool, C&W), not the L-inf one, transfers
most.
"""

from __future__ import annotations

import dataclasses
import itertools
import pathlib

import numpy as np

from experiments import _common, _paper, table3
from experiments import _explain_common as ec
from jaxlogit import explain

NAMES = _paper.PAPER_ATTACKS


def coefficient_matrix(counts: list[np.ndarray]) -> np.ndarray:
    """``(A, A)`` Bhattacharyya coefficients of ``A`` count vectors ``(C,)``."""
    return np.array([[float(explain.bhattacharyya(a, b)) for b in counts] for a in counts])


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    """The ``A (A - 1)`` off-diagonal entries of a square matrix, row by row."""
    return matrix[~np.eye(len(matrix), dtype=bool)]


def unordered_pairs(matrix: np.ndarray) -> np.ndarray:
    """``(M[i, j] + M[j, i]) / 2`` for every ``i < j``: ``A (A - 1) / 2`` values."""
    return np.array(
        [(matrix[i, j] + matrix[j, i]) / 2 for i, j in itertools.combinations(range(len(matrix)), 2)]
    )


def paper_matrices() -> tuple[np.ndarray, np.ndarray]:
    """The paper's coefficients (NaN where it gives none, 1 on the diagonal) and Table 3."""
    bc = np.full((len(NAMES), len(NAMES)), np.nan)
    np.fill_diagonal(bc, 1.0)
    for (a, b), value in _paper.BHATTACHARYYA.items():
        bc[NAMES.index(a), NAMES.index(b)] = bc[NAMES.index(b), NAMES.index(a)] = value
    return bc, np.array([_paper.TABLE3[name] for name in NAMES], dtype=np.float64)


def paper_pair_values(bc: np.ndarray, transfer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Overlap and mean transfer over the pairs the paper reports a coefficient for."""
    pairs = [(NAMES.index(a), NAMES.index(b)) for a, b in _paper.BHATTACHARYYA]
    return (
        np.array([bc[i, j] for i, j in pairs]),
        np.array([(transfer[i, j] + transfer[j, i]) / 2 for i, j in pairs]),
    )


def correlations(bc: np.ndarray, transfer: np.ndarray) -> dict[str, float]:
    """Spearman correlation of overlap and transfer: 12 ordered, 6 unordered, the paper's 4 pairs."""
    return {
        "ordered pairs (12)": ec.spearman(off_diagonal(bc), off_diagonal(transfer)),
        "unordered pairs (6), transfer averaged": ec.spearman(unordered_pairs(bc), unordered_pairs(transfer)),
        "the paper's 4 pairs, transfer averaged": ec.spearman(*paper_pair_values(bc, transfer)),
    }


def matrix_rows(matrix: np.ndarray, digits: int) -> list[list]:
    """Table rows ``[attack, entries...]``, ``None`` (shown as ``-``) for NaN."""
    return [
        [name, *[None if np.isnan(v) else f"{v:.{digits}f}" for v in matrix[i]]]
        for i, name in enumerate(NAMES)
    ]


def run(setup: _common.Setup, out_dir: pathlib.Path) -> str:
    """Computes both matrices and their rank correlations, writes ``bhattacharyya.*``."""
    names = ec.class_names(setup)
    k = explain.scaled_k(len(names))
    attacks = ec.load_attacks(setup)
    counts = [
        ec.supporting(a.g_fn, a.rows["adv_logits"], a.rows["labels"], k, chunk_size=a.explain_batch)[1]
        for a in attacks.values()
    ]
    bc, transfer = coefficient_matrix(counts), table3.transfer_matrix(setup)
    paper_bc, paper_transfer = paper_matrices()
    ours, paper = (
        correlations(bc, transfer),
        {"the paper's 4 pairs, transfer averaged": ec.spearman(*paper_pair_values(paper_bc, paper_transfer))},
    )
    corr_rows = [
        [pairs, round(rho, 3), round(paper[pairs], 3) if pairs in paper else None]
        for pairs, rho in ours.items()
    ]
    header = ["", *NAMES]
    markdown = "\n\n".join(
        [
            f"## Bhattacharyya overlap vs transfer — {setup.dataset}, {setup.resnet}, selected set",
            ec.k_note(len(names)),
            "Bhattacharyya coefficients of the supporting-class distributions (ours | paper, ImageNet):",
            _common.markdown_table(header, matrix_rows(bc, 4)),
            _common.markdown_table(header, matrix_rows(paper_bc, 4)),
            "Table 3, corrected accuracy (%), row = attack evaluated, column = corrector's attack (ours | "
            "paper):",
            _common.markdown_table(header, matrix_rows(transfer, 1)),
            _common.markdown_table(header, matrix_rows(paper_transfer, 1)),
            "Spearman rank correlation between overlap and transfer accuracy (off-diagonal):",
            _common.markdown_table(["pairs", "ours", "paper"], corr_rows),
        ]
    )
    print(markdown)
    _common.write_report(
        out_dir,
        "bhattacharyya",
        markdown,
        {
            "setup": dataclasses.asdict(setup),
            "k": k,
            "attacks": list(NAMES),
            "counts": [c.tolist() for c in counts],
            "bhattacharyya": bc.tolist(),
            "transfer": transfer.tolist(),
            "spearman": {k: ec.finite_or_none(v) for k, v in ours.items()},
            "paper_spearman": paper,
            "paper_bhattacharyya": {"-".join(pair): v for pair, v in _paper.BHATTACHARYYA.items()},
            "paper_transfer": _paper.TABLE3,
        },
    )
    return markdown


main = _common.cli_main("bhattacharyya", run, __doc__.split("\n\n")[0])

if __name__ == "__main__":
    main()
