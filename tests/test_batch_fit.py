"""The attack batch from the device's memory (``jaxlogit.batch_fit``, ``--attack-batch auto``): the
largest batch whose predicted peak fits, a smaller one when memory is small, a one-line error
naming a fitting batch for an explicit one that cannot fit, and XLA's memory line that it uses."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import _xla, batch_fit, data, pipeline, progress, training
from jaxlogit.cli import _correct, main
from jaxlogit.errors import JaxlogitError

SHAPE = (28, 28, 1)  # Fashion-MNIST
PGD1 = pipeline.AttackConfig("pgd", steps=1)  # compiles faster than the paper's 10 steps
LINE = batch_fit.MemoryFit(fixed_bytes=1000.0, per_image_bytes=100.0)


def request(fit=LINE, bound=None, calls=None) -> batch_fit.Request:
    def measured():
        if calls is not None:
            calls.append("fit")
        return fit

    return batch_fit.Request("--attack-batch", "resnet50 pgd at 224x224", bound, measured)


def free_for(batch: int, fit=LINE) -> float:
    """Free bytes whose usable share holds exactly ``batch`` images of ``fit``."""
    return fit.bytes_for(batch) / batch_fit.MEMORY_SHARE


def test_the_line_through_two_probes_predicts_every_batch():
    fit = batch_fit.fit_line({4: LINE.bytes_for(4), 2: LINE.bytes_for(2)})
    assert fit.fixed_bytes == pytest.approx(LINE.fixed_bytes)
    assert fit.bytes_for(250) == pytest.approx(LINE.bytes_for(250))


def test_auto_takes_the_cap_when_it_fits_and_a_smaller_power_of_two_when_memory_is_small():
    assert batch_fit.choose(request(), batch_fit.AUTO, 250, free_for(250)) == 250
    assert batch_fit.choose(request(), batch_fit.AUTO, 250, free_for(249)) == 128
    assert batch_fit.choose(request(), batch_fit.AUTO, 250, free_for(40)) == 32
    assert batch_fit.choose(request(), batch_fit.AUTO, 250, free_for(1)) == 1
    assert batch_fit.choose(request(), batch_fit.AUTO, 250, None) == 250  # unknown memory: the cap


def test_a_bound_that_fits_spares_the_probes():
    calls = []
    fits = request(bound=lambda b: LINE.bytes_for(b), calls=calls)
    assert batch_fit.choose(fits, batch_fit.AUTO, 250, free_for(250)) == 250
    assert calls == []
    loose = request(bound=lambda b: 10 * LINE.bytes_for(b), calls=calls)
    assert batch_fit.choose(loose, batch_fit.AUTO, 250, free_for(250)) == 250
    assert calls == ["fit"]  # the bound did not fit: XLA's line decided


def test_an_explicit_batch_that_cannot_fit_is_one_line_naming_one_that_can():
    free = free_for(100)
    assert batch_fit.choose(request(), 64, 250, free) == 64
    with pytest.raises(JaxlogitError) as err:
        batch_fit.choose(request(), 250, 250, free)
    message = str(err.value)
    assert "\n" not in message and "resnet50 pgd at 224x224" in message
    assert "--attack-batch 250 needs" in message and message.endswith("pass --attack-batch 64 or less")
    with pytest.raises(JaxlogitError, match="one image"):
        batch_fit.choose(request(), batch_fit.AUTO, 250, 0.5 * free_for(1))


def test_free_memory_comes_from_the_environment_or_meminfo(monkeypatch, tmp_path):
    monkeypatch.setenv(batch_fit.FREE_MEMORY_ENV, "3e9")
    assert batch_fit.free_memory_bytes() == 3_000_000_000
    monkeypatch.setenv(batch_fit.FREE_MEMORY_ENV, "lots")
    with pytest.raises(JaxlogitError, match=batch_fit.FREE_MEMORY_ENV):
        batch_fit.free_memory_bytes()
    monkeypatch.delenv(batch_fit.FREE_MEMORY_ENV)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000 kB\nMemFree:  100 kB\nMemAvailable:  2000 kB\n")
    monkeypatch.setattr(batch_fit, "MEMINFO", str(meminfo))
    assert batch_fit.free_memory_bytes(jax.devices("cpu")[0]) == 2000 * 1024


def test_a_complete_store_needs_no_sizing(trained_compact, monkeypatch):
    def must_not_size(*args, **kwargs):
        raise AssertionError("sized a batch although the store was complete")

    monkeypatch.setattr(pipeline, "attack_batch_size", must_not_size)
    attack = pipeline.AttackConfig("pgd")
    backbone = trained_compact.backbone
    assert pipeline._resolved_batch(pipeline.AUTO, backbone, attack, SHAPE, True) == 250
    assert pipeline._resolved_batch(64, backbone, attack, SHAPE, True) == 64
    monkeypatch.setattr(pipeline, "attack_batch_size", lambda *a, **k: 32)
    assert pipeline._resolved_batch(pipeline.AUTO, backbone, attack, SHAPE, False) == 32
    arch = trained_compact.backbone.meta["arch"]
    assert pipeline.CHOSEN_BATCHES[f"{arch} pgd 28x28"] == 32  # what the experiments' reports record


def test_the_store_stage_carries_its_attack_batch(trained_compact, monkeypatch, tmp_path):
    seen = []

    def fake_build(directory, n, produce, **kwargs):
        with progress.progress_bar("logits", n, events=tmp_path / "events.jsonl") as advance:
            advance(n)
        seen.append(kwargs["shard_size"])

    monkeypatch.setattr(pipeline, "attack_batch_size", lambda *a, **k: 32)
    monkeypatch.setattr(pipeline.store, "build", fake_build)
    split = data.load("fashion_mnist", "test")
    pipeline.ensure_logits(trained_compact.backbone, PGD1, split, "test", limit=40, cache=str(tmp_path))
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert seen and all(e["attack_batch"] == 32 for e in events)  # in every event and plain line


@pytest.fixture
def pgd_fit(trained_compact):
    """XLA's memory line of the compact backbone's 1-step PGD program (two probe compiles, once)."""
    f = trained_compact.backbone.logits_fn()
    return pipeline.attack_memory_fit(f, PGD1, SHAPE)


def test_small_memory_gives_a_smaller_batch_whose_program_fits(trained_compact, pgd_fit):
    f, attack = trained_compact.backbone.logits_fn(), PGD1
    chosen = pipeline.attack_batch_size(pipeline.AUTO, f, attack, SHAPE, free_bytes=free_for(40, pgd_fit))
    assert chosen == 32
    assert pipeline.attack_batch_size(pipeline.AUTO, f, attack, SHAPE, free_bytes=1e12) == 250
    # The line holds beyond the probes: XLA's own figure at the chosen batch is within it.
    program = pipeline.one_device_program(f, attack)
    compiled = program.lower(*pipeline._attack_specs(chosen, SHAPE)).compile()
    weights = sum(np.asarray(w).nbytes for w in jax.tree.leaves(trained_compact.backbone.variables))
    assert batch_fit.compiled_bytes(compiled) + weights <= pgd_fit.bytes_for(chosen) * 1.05
    # The cheap bound is above XLA's figure (so skipping the probes when it fits is safe here).
    bound = batch_fit.jaxpr_bound_bytes(program.trace(*pipeline._attack_specs(chosen, SHAPE)).jaxpr)
    assert bound >= batch_fit.compiled_bytes(compiled) + weights


def test_the_cli_names_a_fitting_batch_for_one_that_cannot_fit(
    trained_compact, monkeypatch, capsys, tmp_path
):
    monkeypatch.setattr(_correct, "trained_backbone", lambda *a, **k: trained_compact.backbone)
    monkeypatch.setattr(pipeline, "attack_memory_fit", lambda *a: LINE)  # XLA's line: tested above
    monkeypatch.setenv(batch_fit.FREE_MEMORY_ENV, str(free_for(20)))
    argv = ["logits", "--arch", "resnet_compact", "--attack", "pgd", "--split", "test", "--limit", "8"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--attack-batch", "250", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: --attack-batch 250 needs")
    assert err.endswith("pass --attack-batch 16 or less")


def test_auto_and_numbers_parse_on_commands_and_experiments(trained_compact, monkeypatch, capsys, tmp_path):
    from experiments import _common

    calls = []

    class Stop(Exception):
        """Raised by the stand-in store once it has recorded its batch."""

    def record(*args, batch_size, **kwargs):
        calls.append(batch_size)
        raise Stop

    monkeypatch.setattr(_correct, "trained_backbone", lambda *a, **k: trained_compact.backbone)
    monkeypatch.setattr(pipeline, "ensure_logits", record)
    argv = ["logits", "--arch", "resnet_compact", "--attack", "pgd", "--split", "test"]
    for given in ("auto", "64"):
        with pytest.raises(Stop):
            main([*argv, "--attack-batch", given])
    assert calls == [pipeline.AUTO, 64]
    seen = []
    experiment = _common.cli_main("probe", lambda setup, out: seen.append(setup.attack_batch), "probe")
    experiment(["--attack-batch", "auto", "--out", str(tmp_path)])
    assert seen == [pipeline.AUTO]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--attack-batch", "lots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--attack-batch" in err[0] and "auto" in err[0]


def test_the_prediction_batch_shrinks_the_same_way(trained_compact):
    f = trained_compact.backbone.logits_fn()
    predict = _xla.jit(lambda x: jnp.argmax(f(x), axis=-1))

    def compiled(batch):
        return predict.lower(jax.ShapeDtypeStruct((batch, *SHAPE), np.float32)).compile()

    line = batch_fit.probe_fit(compiled)
    assert training.predict_batch_size(pipeline.AUTO, predict, SHAPE, free_bytes=1e12) == 500
    small = free_for(100, line)  # the weights (constants) come on top: fewer than 100 fit
    chosen = training.predict_batch_size(pipeline.AUTO, predict, SHAPE, free_bytes=small)
    assert chosen < 100 and chosen & (chosen - 1) == 0  # a power of two below the cap
    assert batch_fit.compiled_bytes(compiled(chosen)) <= batch_fit.MEMORY_SHARE * small
    with pytest.raises(JaxlogitError, match="--predict-batch 500 needs"):
        training.predict_batch_size(500, predict, SHAPE, free_bytes=small)
