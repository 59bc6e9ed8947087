"""`jaxlogit attack [--adaptive]` and `jaxlogit bench` end to end, in process, on small settings."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import TEST_BACKBONE

from jaxlogit import pipeline, stats, training
from jaxlogit.cli import main

N_IMAGES = 48
DEFENDED_ROWS = (
    "clean",
    "oblivious attack (paper)",
    "adaptive pgd_ce",
    "adaptive pgd_margin",
    "adaptive logit_matching",
    "worst case (all attacks)",
)


def run_main(argv, capsys) -> str:
    """Runs the CLI in this process; returns stdout (fails on a non-zero exit)."""
    try:
        main(argv)
    except SystemExit as exit_:
        assert exit_.code in (0, None), capsys.readouterr().err
    return capsys.readouterr().out


def field(out: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}\s*(.+)$", out, re.MULTILINE)
    assert match, f"no line {label!r} in:\n{out}"
    return match.group(1).strip()


def interval(text: str) -> tuple[float, float, float]:
    """``(value, low, high)`` of a printed ``0.9054 [0.8996, 0.9109]``."""
    value, low, high = (float(v) for v in re.findall(r"\d+\.\d+", text)[:3])
    assert low <= value <= high, text
    return value, low, high


def defended_table(out: str) -> dict[str, tuple[float, float | None]]:
    """``label -> (defended accuracy, detection AUC or None)`` from the --adaptive report."""
    table = {}
    for label in DEFENDED_ROWS:
        accuracy, auc = field(out, f"  {label}").split()
        table[label] = (float(accuracy), None if auc == "-" else float(auc))
    return table


@pytest.fixture
def small_defaults(monkeypatch):
    """The CLI's defaults shrunk: the session's 1-epoch backbone, a corrector on 512 images."""
    monkeypatch.setattr(training, "default_config", lambda arch, **kw: TEST_BACKBONE)
    monkeypatch.setattr(pipeline, "DEFAULT_TRAIN_LIMIT", 512)
    monkeypatch.setattr(
        pipeline, "DEFAULT_CORRECTOR", pipeline.CorrectorConfig(hidden=512, epochs=20, lr=1e-3)
    )


def test_attack_reports_the_accuracies_of_the_attacked_images(
    trained_compact, test_cache, small_defaults, capsys
):
    out = run_main(
        [
            "attack",
            "--arch",
            "resnet_compact",
            "--attack",
            "pgd",
            "--n",
            str(N_IMAGES),
            "--batch",
            "16",
            "--cache-dir",
            str(test_cache),
        ],
        capsys,
    )
    x, y = trained_compact.x[:N_IMAGES], trained_compact.y[:N_IMAGES]
    expected_clean = float(np.mean(np.argmax(np.asarray(trained_compact.logits_fn(x)), -1) == y))
    clean, low, high = interval(field(out, "clean accuracy:"))
    assert clean == pytest.approx(expected_clean, abs=1e-4)
    assert (low, high) == pytest.approx(stats.wilson_interval(round(clean * N_IMAGES), N_IMAGES), abs=1e-4)
    adversarial, success = (interval(field(out, f))[0] for f in ("adversarial accuracy:", "success rate:"))
    assert adversarial < expected_clean - 0.5
    assert success == pytest.approx(1.0 - adversarial, abs=1e-4)  # untargeted: fooled == misclassified
    mean_norm = float(re.search(r"mean ([0-9.]+)", field(out, "Linf norm (fooled):")).group(1))
    assert 0.0 < mean_norm <= 16 / 255 + 1e-4


def test_attack_adaptive_reports_a_worst_case_below_every_attack(
    trained_compact, test_cache, small_defaults, capsys
):
    out = run_main(
        [
            "attack",
            "--arch",
            "resnet_compact",
            "--attack",
            "pgd",
            "--n",
            str(N_IMAGES),
            "--batch",
            "16",
            "--cache-dir",
            str(test_cache),
            "--adaptive",
            "--steps",
            "10",
            "--restarts",
            "1",
        ],
        capsys,
    )
    table = defended_table(out)
    accuracies = {label: acc for label, (acc, _) in table.items()}
    assert all(0.0 <= acc <= 1.0 for acc in accuracies.values())
    attacked = [label for label in DEFENDED_ROWS if label not in ("clean", "worst case (all attacks)")]
    worst = accuracies["worst case (all attacks)"]
    assert worst <= min(accuracies[label] for label in attacked) + 1e-9
    # An attack that knows the corrector does at least as well as one that does not.
    assert accuracies["adaptive pgd_ce"] < accuracies["clean"]
    aucs = [auc for _, auc in table.values() if auc is not None]
    assert len(aucs) == len(DEFENDED_ROWS) - 1 and all(0.0 <= auc <= 1.0 for auc in aucs)
    assert 0.0 <= float(field(out, "false flags on clean images:")) <= 1.0


def test_attack_adaptive_with_an_unbounded_budget_leaves_nothing(
    trained_compact, test_cache, small_defaults, capsys
):
    out = run_main(
        [
            "attack",
            "--arch",
            "resnet_compact",
            "--attack",
            "pgd",
            "--n",
            "16",
            "--batch",
            "16",
            "--cache-dir",
            str(test_cache),
            "--adaptive",
            "--eps",
            "1.0",
            "--steps",
            "20",
            "--restarts",
            "1",
        ],
        capsys,
    )
    assert defended_table(out)["worst case (all attacks)"][0] <= 1 / 16


def test_bench_json_is_consistent_with_its_own_timings(tmp_path, capsys):
    pytest.importorskip(
        "torchattacks"
    )  # the torch extra is installed in CI; this guards library-only installs
    report_path = tmp_path / "bench.json"
    out = run_main(
        [
            "bench",
            "--attack",
            "pgd",
            "--arch",
            "resnet_compact",
            "--batch",
            "8",
            "--repeats",
            "1",
            "--cache-dir",
            str(tmp_path / "empty-cache"),
            "--json",
            str(report_path),
        ],
        capsys,
    )
    report = json.loads(report_path.read_text())
    assert "random" in report["model"]["weights"]  # an empty cache: random weights, said so
    assert report["model"]["torch_logits_diff"] < 1e-3  # torchattacks attacks the same function
    pgd = report["attacks"]["pgd"]
    ours, theirs = pgd["jaxlogit"], pgd["torchattacks"]
    assert ours["images"] == theirs["images"] == 8
    assert ours["gradient_steps"] == 10  # the paper's PGD: 10 steps
    assert ours["compile_s"] >= 0 and ours["steady_s"] > 0
    assert ours["images_per_s"] == pytest.approx(8 / ours["steady_s"])
    assert pgd["speed_up"] == pytest.approx(ours["images_per_s"] / theirs["images_per_s"], rel=1e-6)
    assert 0 < ours["peak_fraction"] < 2
    assert f"**{pgd['speed_up']:.2f}x**" in out  # the printed table shows the same ratio
    from jaxlogit.bench import _memory

    if _memory.measurable():  # peak memory: Linux CPUs
        assert ours["peak_mib"] > 0 and theirs["peak_mib"] > 0
        assert pgd["memory_ratio"] == pytest.approx(ours["peak_mib"] / theirs["peak_mib"], rel=1e-6)
        assert f"| {pgd['memory_ratio']:.2f}x |" in out
        peaks = report["baseline"]["peak_mib"]
        assert min(peaks.values()) > 0 and set(peaks) == {
            "forward",
            "gradient",
            "torch_forward",
            "torch_gradient",
        }
