"""Batch sizes: every command and experiment takes --attack-batch, --predict-batch, --corrector-batch,
--adaptive-batch, --explain-batch where it has such a step, passes them to the library, writes them
in its report; a non-positive size is a one-line error; no batch size enters a store's key. And the
adaptive experiment runs on any selected set of two classes or more."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from conftest import TEST_BACKBONE

from experiments import _common, _paper, _probe, table2
from experiments import adaptive as adaptive_experiment
from jaxlogit import adaptive, data, explain, paths, pipeline, training
from jaxlogit.cli import _attack, _backbone, _correct, _explain, main
from jaxlogit.errors import JaxlogitError


class Stop(Exception):
    """Raised by a stand-in once it has recorded its arguments (the rest of the command is not needed)."""


def recorder(calls: list, result=None, stop: bool = False):
    """A stand-in that records its keyword arguments and returns ``result`` (or raises ``Stop``)."""

    def record(*args, **kwargs):
        calls.append(kwargs)
        if stop:
            raise Stop
        return result

    return record


def run_main(argv) -> None:
    with pytest.raises(Stop):
        main(argv)


def assert_one_line_error(capsys, code, *words):
    stderr = capsys.readouterr().err
    assert code == 2, stderr
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def compact(trained_compact, monkeypatch):
    """The session's trained backbone stands in for every compact backbone a command asks for."""
    for module in (_attack, _backbone, _correct, _explain):
        monkeypatch.setattr(module, "trained_backbone", lambda *a, **k: trained_compact.backbone)
    return trained_compact.backbone


class FakeStore(dict):
    """A store's arrays; its ``len`` counts rows, as ``LogitStore``'s does."""

    def __len__(self) -> int:
        return len(self["labels"])


FAKE_STORE = FakeStore(labels=np.zeros(1000, np.int32), clean_logits=np.zeros((1000, 10), np.float32))


def test_logits_passes_the_attack_batch(compact, monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "ensure_logits", recorder(calls, stop=True))
    run_main(
        ["logits", "--arch", "resnet_compact", "--attack", "pgd", "--split", "test", "--attack-batch", "64"]
    )
    run_main(["logits", "--arch", "resnet_compact", "--attack", "pgd", "--split", "test"])
    assert [c["batch_size"] for c in calls] == [64, pipeline.AUTO]


@pytest.mark.parametrize("command", ["train", "eval"])
def test_correct_passes_the_attack_and_corrector_batches(compact, monkeypatch, command):
    stores, correctors = [], []
    monkeypatch.setattr(pipeline, "ensure_logits", recorder(stores, FAKE_STORE))
    record_config = recorder(correctors, stop=True)
    monkeypatch.setattr(
        pipeline, "ensure_corrector", lambda store, config, **kw: record_config(config=config)
    )
    args = ["correct", command, "--arch", "resnet_compact", "--attack", "pgd"]
    run_main([*args, "--attack-batch", "64", "--corrector-batch", "32"])
    run_main(args)
    assert [c["batch_size"] for c in stores] == [64, pipeline.AUTO]
    assert [c["config"].batch_size for c in correctors] == [32, pipeline.DEFAULT_CORRECTOR.batch_size]
    assert correctors[1]["config"] == pipeline.DEFAULT_CORRECTOR  # the default keeps the cached corrector


def test_explain_passes_every_batch(compact, monkeypatch):
    correctors, selections, rows, scores = [], [], [], []
    fake = types.SimpleNamespace(g_fn=lambda: None)
    monkeypatch.setattr(_explain, "_corrector", recorder(correctors, fake))
    monkeypatch.setattr(pipeline, "selected_indices", recorder(selections, np.arange(4)))
    monkeypatch.setattr(pipeline, "selected_logits", recorder(rows, {"adv_logits": None, "labels": None}))
    monkeypatch.setattr(explain, "supporting_scores", recorder(scores, stop=True))
    args = ["explain", "--arch", "resnet_compact", "--attack", "pgd"]
    batches = [
        "--attack-batch",
        "64",
        "--corrector-batch",
        "32",
        "--predict-batch",
        "16",
        "--explain-batch",
        "8",
    ]
    run_main([*args, *batches])
    run_main(args)
    assert [(c["attack_batch"], c["corrector_batch"]) for c in correctors] == [
        (64, 32),
        (pipeline.AUTO, pipeline.DEFAULT_CORRECTOR.batch_size),
    ]
    assert [c["batch_size"] for c in selections] == [16, pipeline.AUTO]
    assert [c["batch_size"] for c in rows] == [64, pipeline.AUTO]
    assert [c["chunk_size"] for c in scores] == [8, explain.SCORES_CHUNK_SIZE]


def test_backbone_eval_passes_the_predict_batch(compact, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "accuracy", recorder(calls, stop=True))
    run_main(["backbone", "eval", "--arch", "resnet_compact", "--predict-batch", "16"])
    run_main(["backbone", "eval", "--arch", "resnet_compact"])
    assert [c["batch_size"] for c in calls] == [16, pipeline.AUTO]


def test_attack_passes_its_batches_and_keeps_batch_as_an_alias(compact, monkeypatch):
    batches, reports = [], []

    def fake_attack_split(logits_fn, attack, split, n, *, batch_size, workers, keep_images):
        batches.append(batch_size)
        x, y = split.get_batch(np.arange(n))
        logits = np.eye(10, dtype=np.float32)[y]
        kept = x if keep_images else None
        return pipeline.SplitAttack(y, logits, logits, np.zeros(n, bool), np.zeros(n), kept)

    def fake_report(backbone, config, *args, **kwargs):
        reports.append({"adaptive_batch": config.batch_size, **kwargs})

    monkeypatch.setattr(pipeline, "attack_split", fake_attack_split)
    monkeypatch.setattr(_attack, "report_adaptive", fake_report)
    args = ["attack", "--arch", "resnet_compact", "--attack", "pgd", "--n", "40", "--adaptive"]
    main([*args, "--attack-batch", "16", "--adaptive-batch", "8", "--corrector-batch", "32"])
    main([*args, "--batch", "16"])
    main(args)
    assert batches == [16, 16, 40]  # never more than the images
    assert reports[0]["adaptive_batch"] == 8 and reports[0]["attack_batch"] == 16
    assert reports[0]["corrector"].batch_size == 32
    assert reports[1]["adaptive_batch"] == 16  # the adaptive batch follows the attack batch by default
    assert reports[2]["attack_batch"] == pipeline.AUTO
    assert reports[2]["corrector"] == pipeline.DEFAULT_CORRECTOR


@pytest.mark.parametrize(
    "argv",
    [
        ["logits", "--arch", "resnet_compact", "--attack", "pgd", "--split", "test", "--attack-batch", "0"],
        ["attack", "--arch", "resnet_compact", "--attack", "pgd", "--batch", "-3"],
        ["correct", "train", "--arch", "resnet_compact", "--attack", "pgd", "--corrector-batch", "0"],
        ["explain", "--arch", "resnet_compact", "--attack", "pgd", "--explain-batch", "0"],
        ["backbone", "eval", "--arch", "resnet_compact", "--predict-batch", "0"],
    ],
)
def test_a_non_positive_batch_is_a_one_line_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert_one_line_error(capsys, exit_.value.code, "-batch")


@pytest.mark.parametrize(
    "option", ["--attack-batch", "--predict-batch", "--corrector-batch", "--adaptive-batch"]
)
def test_an_experiment_rejects_a_non_positive_batch_in_one_line(option, capsys, tmp_path):
    main_ = _common.cli_main("probe", lambda setup, out: pytest.fail("ran"), "probe")
    with pytest.raises(SystemExit) as exit_:
        main_([option, "0", "--out", str(tmp_path)])
    assert_one_line_error(capsys, exit_.value.code, option)


def test_library_entry_points_reject_a_non_positive_batch(trained_compact):
    with pytest.raises(JaxlogitError, match="--attack-batch"):
        _common.Setup(attack_batch=0)
    with pytest.raises(JaxlogitError, match="--explain-batch"):
        _common.Setup(explain_batch=-1)
    split = data.load("fashion_mnist", "test")
    with pytest.raises(JaxlogitError, match="--attack-batch"):
        pipeline.ensure_logits(
            trained_compact.backbone, pipeline.AttackConfig("pgd"), split, "test", batch_size=0
        )


def test_experiment_options_reach_the_setup_and_its_steps(monkeypatch, tmp_path):
    seen = []
    main_ = _common.cli_main("probe", lambda setup, out: seen.append(setup), "probe")
    sizes = {"--attack-batch": 64, "--predict-batch": 16, "--corrector-batch": 32, "--adaptive-batch": 8}
    main_([*(str(v) for item in sizes.items() for v in item), "--explain-batch", "4", "--out", str(tmp_path)])
    main_(["--out", str(tmp_path)])
    given, default = seen
    assert (given.attack_batch, given.predict_batch, given.adaptive_batch, given.explain_batch) == (
        64,
        16,
        8,
        4,
    )
    assert given.corrector == pipeline.DEFAULT_CORRECTOR.__class__(
        **{**vars(pipeline.DEFAULT_CORRECTOR), "batch_size": 32}
    )
    assert default == _common.default_setup(data.DEFAULT_DATASET)  # no option: today's setup, today's caches
    # The setup's sizes reach the pipeline.
    calls = {}
    results = {"selected_indices": np.arange(3), "selected_logits": {"labels": np.arange(3)}}
    for name in ("ensure_logits", "corrector_for_attack", "selected_indices", "selected_logits"):
        monkeypatch.setattr(pipeline, name, recorder(calls.setdefault(name, []), results.get(name)))
    monkeypatch.setattr(_common, "load_backbone", lambda *a, **k: None)
    monkeypatch.setattr(_common, "load_split", lambda *a, **k: None)
    attack = pipeline.AttackConfig("pgd")
    _common.logits(given, None, attack, "test")
    _common.corrector_for(given, None, attack)
    _common.selected_logits(given, None, attack)
    assert calls["ensure_logits"][0]["batch_size"] == 64
    assert calls["corrector_for_attack"][0]["batch_size"] == 64
    assert calls["selected_indices"][0]["batch_size"] == 16
    assert calls["selected_logits"][0]["batch_size"] == 64


def test_an_experiment_report_holds_its_batch_sizes(monkeypatch, tmp_path):
    fake = types.SimpleNamespace(predict_classes=lambda z: np.asarray(z).argmax(-1))
    rows = _common.Rows(
        clean_logits=np.eye(3), adv_logits=np.eye(3)[::-1], labels=np.arange(3), success=np.ones(3, bool)
    )
    monkeypatch.setattr(_common, "load_backbone", lambda *a, **k: None)
    monkeypatch.setattr(_probe, "fooled_percent", lambda *a, **k: 100.0)  # the paper's C&W: no grid
    monkeypatch.setattr(_common, "corrector_for", lambda *a, **k: fake)
    monkeypatch.setattr(_common, "selected_logits", lambda *a, **k: rows)
    main_ = _common.cli_main("table2", table2.run, "table 2")
    main_(
        ["--attack-batch", "64", "--corrector-batch", "32", "--adaptive-batch", "8", "--out", str(tmp_path)]
    )
    setup = json.loads((tmp_path / "table2.json").read_text())["setup"]
    assert (setup["attack_batch"], setup["corrector"]["batch_size"], setup["adaptive_batch"]) == (64, 32, 8)
    assert setup["predict_batch"] == pipeline.AUTO
    assert setup["explain_batch"] == explain.SCORES_CHUNK_SIZE


def test_the_attack_batch_is_not_part_of_the_store_key(trained_compact, monkeypatch):
    keys = []
    real = paths.artifact_dir

    def record(kind, name, config, cache):
        keys.append(config)
        return real(kind, name, config, cache)

    monkeypatch.setattr(paths, "artifact_dir", record)
    attack = pipeline.AttackConfig("pgd")
    args = (trained_compact.backbone, attack, data.load("fashion_mnist", "test"), "test", 100, None)
    pipeline.store_dir(*args)
    (key,) = keys
    assert not any("batch" in name for name in key)
    assert key["attack_keys"] == pipeline.ATTACK_KEYS  # stores of batch-position keys are not reused


# The adaptive experiment on tiny selected sets (PGD row only, few steps).
TINY = adaptive_experiment.Config(
    attack=adaptive.AdaptiveConfig(steps=2, restarts=1, chunk=2),
    eps_sweep=(16 / 255,),
    unbounded_images=2,
    attacks=("pgd",),
)


@pytest.fixture
def tiny_setup(trained_compact, test_cache, monkeypatch) -> _common.Setup:
    """The session's backbone, a small corrector, only the PGD row, and a selected set of our choosing."""
    monkeypatch.setattr(training, "default_config", lambda arch, **kw: TEST_BACKBONE)
    monkeypatch.setattr(_paper, "PAPER_ATTACKS", ("pgd",))
    return _common.Setup(
        backbones=("resnet_compact",),
        train_limit=64,
        corrector=pipeline.CorrectorConfig(hidden=32, epochs=2, batch_size=16, lr=1e-3),
        cache_dir=str(test_cache),
        attack_batch=32,
        adaptive_batch=4,
    )


def correct_images_of(trained_compact, classes, per_class: int) -> np.ndarray:
    """Sorted test indices of the first ``per_class`` correctly classified images of each of ``classes``."""
    right = np.asarray(trained_compact.logits_fn(trained_compact.x)).argmax(-1) == trained_compact.y
    picks = [np.flatnonzero(right & (trained_compact.y == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(picks))


@pytest.mark.slow
def test_adaptive_runs_on_a_two_class_selected_set(tiny_setup, trained_compact, monkeypatch, tmp_path):
    ids = correct_images_of(trained_compact, (0, 1), 3)
    monkeypatch.setattr(_common, "selected_indices", lambda setup, **kw: ids)
    adaptive_experiment.run(tiny_setup, tmp_path, TINY)
    report = json.loads((tmp_path / "adaptive.json").read_text())
    (row,) = report["rows"]
    assert row["n"] == len(ids) == 6
    assert set(row["accuracy"]) >= {adaptive.OBLIVIOUS, *adaptive.ADAPTIVE_ATTACKS, adaptive.WORST}
    assert report["config"]["attack"]["batch_size"] == 4  # --adaptive-batch, not the config's own
    assert report["setup"]["attack_batch"] == 32


def test_adaptive_on_one_class_is_a_one_line_error(tiny_setup, trained_compact, monkeypatch, tmp_path):
    ids = correct_images_of(trained_compact, (3,), 3)
    monkeypatch.setattr(_common, "selected_indices", lambda setup, **kw: ids)
    with pytest.raises(JaxlogitError, match="at least two classes") as err:
        adaptive_experiment.run(tiny_setup, tmp_path, TINY)
    assert "\n" not in str(err.value) and "1 class" in str(err.value)
    assert not (tmp_path / "adaptive.json").exists()


def test_attack_adaptive_on_one_class_is_a_one_line_error(compact, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["attack", "--arch", "resnet_compact", "--attack", "pgd", "--n", "1", "--adaptive"])
    assert_one_line_error(capsys, exit_.value.code, "at least two classes", "--n")


def test_adaptive_attacks_option_picks_the_rows_and_needs_pgd():
    assert adaptive_experiment.configure(5, 1, "16", "pgd,cw")["config"].attacks == ("pgd", "cw")
    for bad in ("cw", "pgd,fgsm", "pgd,pgd"):
        with pytest.raises(JaxlogitError, match="--attacks .*pgd among them"):
            adaptive_experiment.configure(5, 1, "16", bad)


def test_correct_train_passes_the_depth(compact, monkeypatch):
    correctors = []
    monkeypatch.setattr(pipeline, "ensure_logits", recorder([], FAKE_STORE))
    record_config = recorder(correctors, stop=True)
    monkeypatch.setattr(
        pipeline, "ensure_corrector", lambda store, config, **kw: record_config(config=config)
    )
    args = ["correct", "train", "--arch", "resnet_compact", "--attack", "pgd", "--hidden", "64"]
    run_main([*args, "--depth", "2"])
    run_main([*args, "--hidden", "0", "--depth", "3"])  # the single-layer corrector has no hidden layer
    assert [(c["config"].hidden, c["config"].depth) for c in correctors] == [(64, 2), (None, 1)]
