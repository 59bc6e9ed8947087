"""Long jobs a user can follow from a log: plain progress lines when stderr is a file, events.jsonl,
and one compiled attack program per backbone x attack for the whole process."""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxlogit import _xla, attacks, data, pipeline, progress, store, training

LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (.+?) (\d+)/(\d+) \(")


def parse_lines(text: str) -> list[tuple[str, str, int, int, str]]:
    """(time, stage, done, total, line) of every progress line of a log."""
    found = []
    for line in text.splitlines():
        match = LINE.match(line)
        if match:
            found.append((match[1], match[2], int(match[3]), int(match[4]), line))
    return found


def read_events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fresh_settings(monkeypatch):
    """Progress settings restored after the test."""
    monkeypatch.setattr(progress, "SETTINGS", progress.Settings())
    return progress.SETTINGS


# ---------------------------------------------------------------- progress_bar in-process


def test_lines_every_few_seconds_and_events_when_stderr_is_a_file(fresh_settings, tmp_path, capsys):
    progress.configure(log_every=0.05)
    events = tmp_path / "a" / "events.jsonl"
    with progress.progress_bar("stage", 6, unit="img", events=events) as advance:
        for _ in range(3):
            progress.partial(1)
            time.sleep(0.15)
            progress.partial(1)
            time.sleep(0.15)
            advance(2, loss=0.5)
    lines = parse_lines(capsys.readouterr().err)
    counts = [done for _, _, done, _, _ in lines]
    assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 6
    assert {1, 3, 5} & set(counts), counts  # uncommitted units show between commits
    assert lines[-1][4].endswith(" done") and "img/s" in lines[-1][4] and "devices=" in lines[-1][4]
    recorded = read_events(events)
    assert [e["event"] for e in recorded] == ["start", "progress", "progress", "progress", "end"]
    assert [e["done"] for e in recorded] == [0, 2, 4, 6, 6] and recorded[-1]["total"] == 6
    assert recorded[1]["loss"] == 0.5 and recorded[-1]["elapsed"] >= recorded[1]["elapsed"] > 0


def test_quiet_prints_nothing_but_still_logs_events(fresh_settings, tmp_path, capsys):
    progress.configure(log_every=0.01, quiet=True)
    with progress.progress_bar("stage", 2, events=tmp_path / "events.jsonl") as advance:
        time.sleep(0.05)
        advance(2)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    assert [e["done"] for e in read_events(tmp_path / "events.jsonl")] == [0, 2, 2]


def test_disabled_progress_writes_nothing(fresh_settings, tmp_path, capsys):
    with progress.progress_bar("stage", 2, enabled=False, events=tmp_path / "events.jsonl") as advance:
        advance(2)
    assert capsys.readouterr().err == "" and not (tmp_path / "events.jsonl").exists()


def test_run_events_gather_every_stage_and_a_crash_is_recorded(fresh_settings, tmp_path, capsys):
    progress.configure(run_events=tmp_path / "run" / "events.jsonl", quiet=True)
    with progress.progress_bar("first", 1) as advance:
        advance(1)
    with pytest.raises(KeyboardInterrupt), progress.progress_bar("second", 4, completed=1) as advance:
        advance(1)
        raise KeyboardInterrupt
    recorded = read_events(tmp_path / "run" / "events.jsonl")
    assert [(e["stage"], e["event"], e["done"]) for e in recorded] == [
        ("first", "start", 0),
        ("first", "progress", 1),
        ("first", "end", 1),
        ("second", "start", 1),
        ("second", "progress", 2),
        ("second", "stopped", 2),
    ]


def test_an_experiment_logs_every_stage_in_its_run_directory(fresh_settings, tmp_path, capsys, monkeypatch):
    from experiments import _common

    monkeypatch.setenv("JAXLOGIT_XLA_CACHE", "0")

    def run(setup, out_dir):
        for stage in ("one", "two"):
            with progress.progress_bar(stage, 3, events=tmp_path / stage / "events.jsonl") as advance:
                time.sleep(0.3)
                advance(3)
        return ""

    main = _common.cli_main("fake", run, "A fake experiment.")
    main(["--out", str(tmp_path / "run"), "--log-every", "0.1"])
    recorded = read_events(tmp_path / "run" / progress.EVENTS_FILE)
    assert [(e["stage"], e["event"], e["done"]) for e in recorded] == [
        (stage, event, done)
        for stage in ("one", "two")
        for event, done in (("start", 0), ("progress", 3), ("end", 3))
    ]
    assert read_events(tmp_path / "one" / "events.jsonl") == recorded[:3]
    assert len(parse_lines(capsys.readouterr().err)) >= 4  # 0.3 s stages, a line every 0.1 s
    assert progress.SETTINGS.run_events is None  # the run's file is not used after the run


def test_log_every_comes_from_the_environment(fresh_settings, monkeypatch):
    monkeypatch.setenv("JAXLOGIT_LOG_EVERY", "2.5")
    assert progress.log_every() == 2.5
    progress.configure(log_every=7)
    assert progress.log_every() == 7.0


def test_a_resumed_store_logs_its_restart(fresh_settings, tmp_path):
    progress.configure(quiet=True)

    def produce(start, stop):
        n = stop - start
        return {
            "clean_logits": np.zeros((n, 3)),
            "adv_logits": np.ones((n, 3)),
            "labels": np.arange(start, stop),
            "success": np.ones(n, bool),
            "norm": np.zeros(n),
        }

    def crash_at_row_6(start, stop):
        if start >= 6:
            raise KeyboardInterrupt
        return produce(start, stop)

    with pytest.raises(KeyboardInterrupt):
        store.build(tmp_path / "s", 10, crash_at_row_6, shard_size=3, config={"a": 1})
    built = store.build(tmp_path / "s", 10, produce, shard_size=3, config={"a": 1})
    recorded = read_events(tmp_path / "s" / progress.EVENTS_FILE)
    assert [(e["event"], e["done"]) for e in recorded] == [
        ("start", 0),
        ("progress", 3),
        ("progress", 6),
        ("stopped", 6),
        ("start", 6),
        ("progress", 9),
        ("progress", 10),
        ("end", 10),
    ]
    assert all(e["total"] == 10 for e in recorded) and len(built) == 10


# ---------------------------------------------------------------- a real extraction, stderr to a file

_CLI = """
import sys
sys.path.insert(0, {tests!r})
from conftest import TEST_BACKBONE
from jaxlogit import training
from jaxlogit.cli import main
training.default_config = lambda arch, **kw: TEST_BACKBONE
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_a_redirected_extraction_logs_progress_while_it_runs(trained_compact, tmp_path):
    from conftest import TEST_BACKBONE

    cache = tmp_path / "cache"
    shutil.copytree(trained_compact.backbone.directory, training.backbone_dir(TEST_BACKBONE, cache))
    limit = 750  # 3 batches of 250 in one shard
    script = _CLI.format(tests=os.path.dirname(__file__))
    args = [
        "logits",
        "--arch",
        "resnet_compact",
        "--attack",
        "pgd",
        "--split",
        "test",
        "--limit",
        str(limit),
        "--cache-dir",
        str(cache),
        "--log-every",
        "0.2",
    ]
    log = tmp_path / "run.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={  # jaxlogit's own cache (<cache>/xla), not the test run's
                **{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},
                "JAXLOGIT_XLA_CACHE": "1",
            },
        )
        seen_while_running = None
        while proc.poll() is None and seen_while_running is None:
            middle = [done for _, _, done, _, _ in parse_lines(log.read_text()) if 0 < done < limit]
            if middle and proc.poll() is None:
                seen_while_running = middle[0]
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert seen_while_running is not None, text  # a line with a count between 0 and the total, before the end

    lines = parse_lines(text)
    assert lines and lines[-1][4].endswith(" done") and lines[-1][2:4] == (limit, limit), text
    before = lines[:-1]
    counts = [done for _, _, done, _, _ in before]
    assert len(before) >= 2 and len(set(counts)) >= 2 and counts == sorted(counts), text
    assert [t for t, *_ in lines] == sorted(t for t, *_ in lines)
    assert all("img/s" in line and "ETA" in line and "devices=1" in line for *_, line in lines)
    assert {total for _, _, _, total, _ in lines} == {limit}

    directory = out.split("store: ")[1].split()[0]
    recorded = read_events(pipeline.pathlib.Path(directory) / progress.EVENTS_FILE)
    done = [e["done"] for e in recorded]
    assert recorded[0]["event"] == "start" and recorded[-1]["event"] == "end"
    assert done == sorted(done) and done[0] == 0 and done[-1] == limit
    assert any((cache / "xla").iterdir())  # the persistent compilation cache was turned on


# ---------------------------------------------------------------- one compiled program per backbone x attack


@pytest.fixture
def count_compilations():
    """A list that gets one entry per XLA compilation while the test runs."""
    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    jax.config.update("jax_enable_compilation_cache", False)  # every program compiles, none is loaded
    yield compiled
    jax.config.update("jax_enable_compilation_cache", True)
    jax.monitoring.unregister_event_duration_listener(listener)


def closure_store_rows(backbone, attack, split, indices, batch_size):
    """The attack as ``ensure_logits`` ran it before programs were shared: a new closure over the weights."""
    logits_fn, root_key = backbone.logits_fn(), jax.random.key(attack.seed)

    @_xla.jit
    def attack_batch(x, y, ids):
        res = pipeline.run_attack(attack, logits_fn, x, y, key=attacks.sample_keys(root_key, ids))
        return logits_fn(x), res.logits, res.success, res.norm

    parts = []
    for begin in range(0, len(indices), batch_size):
        ids = indices[begin : begin + batch_size]
        x, y = split.get_batch(ids)
        parts.append([np.asarray(o) for o in attack_batch(x, y, ids)])
    names = ("clean_logits", "adv_logits", "success", "norm")
    return dict(zip(names, (np.concatenate(p) for p in zip(*parts))))


def test_a_second_store_of_the_same_shapes_does_not_recompile(
    trained_compact, tmp_path, monkeypatch, count_compilations
):
    monkeypatch.setattr(pipeline, "_ATTACK_PROGRAMS", collections.OrderedDict())
    attack = pipeline.AttackConfig("pgd", steps=2)
    test_split, train_split = data.load("fashion_mnist", "test"), data.load("fashion_mnist", "train")
    pipeline.ensure_logits(
        trained_compact.backbone,
        attack,
        test_split,
        "test",
        limit=60,
        batch_size=20,
        cache=tmp_path,
        progress=False,
    )
    assert count_compilations, "the first store compiles"
    reloaded = training.load_backbone(trained_compact.backbone.directory)  # same weights, new arrays
    count_compilations.clear()
    second = pipeline.ensure_logits(
        reloaded, attack, train_split, "train", limit=40, batch_size=20, cache=tmp_path, progress=False
    )
    assert count_compilations == []
    expected = closure_store_rows(reloaded, attack, train_split, np.arange(40), 20)
    for key, value in expected.items():
        np.testing.assert_array_equal(second[key], value, err_msg=key)  # bitwise what a fresh program gives
    other_attack = pipeline.AttackConfig("pgd", steps=2, seed=1)
    assert pipeline.attack_program(reloaded.logits_fn(), other_attack) is not pipeline.attack_program(
        reloaded.logits_fn(), attack
    )
