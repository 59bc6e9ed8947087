"""The throughput model's arithmetic (``benchmarks/throughput_model.py``): a stage's time is
images x FLOPs per image / (devices x peak x utilisation), so more devices divide it; the work of
each attack follows its registered settings."""

from __future__ import annotations

import pytest

from benchmarks import throughput_model as model
from jaxlogit.attacks._builtin import CW, PGD


def test_a_stage_takes_its_flops_over_the_devices_delivered_rate():
    seconds = model.stage_seconds(1000, 1e9, devices=2, peak=1e12, utilisation=0.5)
    assert seconds == pytest.approx(1000 * 1e9 / (2 * 1e12 * 0.5))
    one = model.stage_seconds(model.TRAIN_IMAGES, 3e12, 1, model.H200.peak_flops["bfloat16"], 0.4)
    two = model.stage_seconds(model.TRAIN_IMAGES, 3e12, 2, model.H200.peak_flops["bfloat16"], 0.4)
    assert two == pytest.approx(one / 2)
    assert model.decode_seconds(100, 0.01, cores=4) == pytest.approx(0.25)


def test_attack_work_follows_the_registered_settings():
    pgd, cw = model.attack_work("pgd"), model.attack_work("cw")
    assert pgd.gradients == PGD["steps"] and pgd.forwards == PGD["steps"] + 2  # + re-prediction, clean
    assert cw.gradients == CW["steps"] * CW["search_steps"]
    assert model.attack_work("deepfool").gradients == model.DEEPFOOL_MEAN_STEPS * 9  # 10 candidates
    # FLOPs of the work: forwards at the forward's cost, each gradient at its extra cost.
    assert pgd.flops(2.0, 5.0) == pytest.approx(pgd.forwards * 2.0 + pgd.gradients * 3.0)


def test_the_report_halves_the_attack_stages_with_twice_the_devices():
    flops = {"resnet50": (4e9, 12e9)}
    lines = model.report(flops, decode=0.0, device=model.H200, devices=[4, 8], utilisation=0.4)
    rows = [line.split("|") for line in lines if line.startswith("| float32")]
    train = [float(row[3].split()[0]) for row in rows]
    assert train[1] == pytest.approx(train[0] / 2, rel=0.02)
    assert model.corrector_flops_per_example(10, 100) == 3 * 2 * (10 * 100 + 100 * 10)
