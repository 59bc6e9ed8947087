"""Several processes: job options, a logit store written by several processes, a corrector trained by them.

The end-to-end test runs real 2-process jobs (``jax.distributed`` on localhost, gloo collectives)
as subprocesses with timeouts, so a hung collective fails the test instead of hanging the suite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import _common
from jaxlogit import corrector, distributed, store
from jaxlogit.cli import _app, main
from jaxlogit.errors import JaxlogitError
from jaxlogit.store import _layout

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "_multihost_worker.py"
TIMEOUT = 300  # seconds a worker may take on a loaded machine before the test fails


# --- the job's settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "coordinator, n, i, words",
    [
        ("localhost:1234", 2, 2, ["--process-id 2", "[0, 2)"]),
        ("localhost:1234", 2, -1, ["--process-id -1"]),
        ("localhost", 2, 0, ["HOST:PORT", "'localhost'"]),
        ("host0:99999", 2, 0, ["HOST:PORT"]),
        (None, 2, 1, ["--coordinator HOST:PORT", "JAX_COORDINATOR_ADDRESS"]),
        ("localhost:1234", 0, 0, ["--num-processes 0"]),
    ],
)
def test_bad_job_settings_are_one_line_errors_naming_the_fix(coordinator, n, i, words):
    with pytest.raises(JaxlogitError) as err:
        distributed.check_settings(coordinator, n, i)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "localhost:1234")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "5")
    with pytest.raises(JaxlogitError, match=r"--process-id 5 is outside \[0, 2\)"):
        distributed.initialize()
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(JaxlogitError, match=r"\$JAX_NUM_PROCESSES='two' is not an integer"):
        distributed.initialize()


def test_nothing_given_is_a_single_process(monkeypatch):
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1, process_id=0) is False
    assert distributed.processes() is None


JOB = ["--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "1"]


@pytest.fixture
def joined(monkeypatch):
    """Replaces ``distributed.initialize``: records its arguments instead of joining a job."""
    calls = []
    monkeypatch.setattr(_app.distributed, "initialize", lambda *args: calls.append(args) or False)
    monkeypatch.setattr(_app.distributed, "shutdown", lambda: calls.append("left"))
    return calls


def test_the_command_group_joins_the_job_before_the_subcommand(joined, capsys):
    main([*JOB, "models"])
    assert joined == [("host0:1234", 2, 1), "left"]
    assert "resnet_compact" in capsys.readouterr().out  # the subcommand ran between


def test_a_failed_command_does_not_wait_for_its_peers(joined, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*JOB, "backbone", "eval", "--arch", "resnet51"])
    assert exit_.value.code == 2
    assert joined == [("host0:1234", 2, 1)]  # no barrier: the job stops instead of hanging


def test_bad_job_options_are_one_line_cli_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--coordinator", "host0:1234", "--num-processes", "2", "--process-id", "3", "models"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: --process-id 3") and "Traceback" not in err


def test_experiments_join_the_job_before_they_run(joined, tmp_path):
    seen = []

    def run(setup, out_dir):
        seen.append(list(joined))
        return ""

    command = _common.cli_main("probe", run, "A probe.")
    command(["--coordinator", "h:1", "--num-processes", "3", "--process-id", "2", "--out", str(tmp_path)])
    assert seen == [[("h:1", 3, 2)]]  # joined before the run
    assert joined == [("h:1", 3, 2), "left"]  # and left after it


# --- one store, several processes (collectives stubbed: the processes run one after another) ------


class OneAfterAnother(distributed.Processes):
    """A process of a job whose processes this test runs one after another: no collectives needed."""

    def barrier(self, name: str) -> None:
        pass

    def failed(self, ok: bool) -> list[int]:
        return [] if ok else [self.index]


@dataclasses.dataclass(frozen=True)
class PeerFailed(distributed.Processes):
    """Process 0 of a job whose process 1 fails; records what this process reported."""

    reports: list = dataclasses.field(default_factory=list)

    def failed(self, ok: bool) -> list[int]:
        self.reports.append(ok)
        return [1] if ok else [0, 1]


def test_together_stops_every_process_when_one_fails():
    processes = PeerFailed(0, 2)
    with pytest.raises(JaxlogitError, match=r"writing failed on process\(es\) 1; read their error"):
        with processes.together("writing"):
            pass  # this process succeeded; its peer did not
    with pytest.raises(KeyError, match="mine"):  # its own error, after telling the others
        with processes.together("writing"):
            raise KeyError("mine")
    assert processes.reports == [True, False]


ROWS, SHARD = 70, 16  # 5 shards, the last one short


def produce(start, stop):
    rows = np.arange(start, stop)
    logits = np.sin(rows[:, None] * np.arange(1, 4)).astype(np.float32)
    return {
        "clean_logits": logits,
        "adv_logits": -logits,
        "labels": (rows % 3).astype(np.int32),
        "success": rows % 2 == 0,
        "norm": rows.astype(np.float32) / 7,
    }


def counting(calls, fail_after=None):
    def produce_fn(start, stop):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError("died")
        calls.append(start // SHARD)
        return produce(start, stop)

    return produce_fn


def build(directory, produce_fn, processes=None):
    return store.build(
        directory, ROWS, produce_fn, shard_size=SHARD, config={"x": 1}, progress=False, processes=processes
    )


def before_zero(directory, produce_fn):
    """Process 1 of 2, run before process 0: it writes its shards, then finds no store to open (in a
    real job it opens the store once process 0 has committed it)."""
    with pytest.raises(JaxlogitError, match="no logit store"):
        build(directory, produce_fn, OneAfterAnother(1, 2))


def files_of(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_processes_write_their_own_shards_and_process_zero_commits_the_one_process_store(tmp_path):
    build(tmp_path / "one", produce)
    calls1, calls0 = [], []
    before_zero(tmp_path / "two", counting(calls1))
    assert not store.is_complete(tmp_path / "two")  # shards 1 and 3 written; nothing committed yet
    assert calls1 == [1, 3]
    opened = build(tmp_path / "two", counting(calls0), OneAfterAnother(0, 2))
    assert calls0 == [0, 2, 4]
    assert opened.complete
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")  # no records left, same bytes


def test_a_restarted_process_redoes_only_its_uncommitted_shards(tmp_path):
    build(tmp_path / "one", produce)
    directory = tmp_path / "two"
    first, again, zero, zero_again = [], [], [], []
    with pytest.raises(RuntimeError, match="died"):
        build(directory, counting(first, fail_after=1), OneAfterAnother(1, 2))
    assert first == [1]
    with pytest.raises(JaxlogitError, match="shard-00003"):  # process 1 never wrote shard 3
        build(directory, counting(zero), OneAfterAnother(0, 2))
    before_zero(directory, counting(again))
    assert again == [3]
    build(directory, counting(zero_again), OneAfterAnother(0, 2))
    assert zero == [0, 2, 4] and zero_again == []
    assert files_of(directory) == files_of(tmp_path / "one")


def test_a_damaged_shard_of_a_record_is_written_again(tmp_path):
    build(tmp_path / "one", produce)
    directory = tmp_path / "two"
    before_zero(directory, produce)
    _layout.shard_path(directory, 3, "norm").write_bytes(b"garbage")
    calls = []
    before_zero(directory, counting(calls))
    assert calls == [3]
    build(directory, produce, OneAfterAnother(0, 2))
    assert files_of(directory) == files_of(tmp_path / "one")


def test_one_process_finishes_what_several_left(tmp_path):
    build(tmp_path / "one", produce)
    before_zero(tmp_path / "two", produce)
    build(tmp_path / "two", produce)
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")


# --- real jobs of two processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def worker_env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_FLAGS"))}
    env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAXLOGIT_XLA_CACHE="0")
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def start(cache: pathlib.Path, *args: str, devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(cache), *args],
        env=worker_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen]) -> list[dict]:
    """Waits for every worker (killing all of them if one overruns) and returns their JSON lines."""
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err[-3000:]
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            proc.kill()
    return outs


def job(cache: pathlib.Path, *extra: tuple[str, ...]) -> list[subprocess.Popen]:
    """Starts the two processes of a job; ``extra[i]`` are process i's own arguments."""
    coordinator = f"localhost:{free_port()}"
    return [
        start(cache, "--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i), *extra[i])
        for i in range(2)
    ]


def corrector_of(directory: str) -> tuple[list[np.ndarray], list[float]]:
    """A saved corrector's params (leaves) and held-out accuracy per epoch."""
    _, params, meta = corrector.load(directory)
    return [np.asarray(leaf) for leaf in jax.tree.leaves(params)], meta["holdout_accuracy"]


@pytest.mark.slow
def test_two_processes_killed_and_rerun_make_the_one_process_store_and_corrector(tmp_path):
    # The reference: one process with two devices (the corrector's batch split in two, as over two processes).
    (one,) = finish([start(tmp_path / "one", devices=2)])
    # A job whose process 1 dies (SIGKILL) after committing its first shard; process 0 is then stopped.
    procs = job(tmp_path / "two", ("--store-only",), ("--store-only", "--die-after-shards", "1"))
    try:
        procs[1].wait(timeout=TIMEOUT)
        assert procs[1].returncode == -signal.SIGKILL
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    store_dir = pathlib.Path(one["store"].replace(str(tmp_path / "one"), str(tmp_path / "two")))
    assert not store.is_complete(store_dir)
    # Both rerun: process 1 redoes only its uncommitted shard, and the job ends where one process does.
    zero, first = finish(job(tmp_path / "two", (), ()))
    assert first["written"] == [3] and set(zero["written"]) <= {0, 2}
    assert zero["devices"] == first["devices"] == one["devices"] == 2
    assert files_of(store_dir) == files_of(pathlib.Path(one["store"]))
    got, got_accuracy = corrector_of(zero["corrector"])
    want, want_accuracy = corrector_of(one["corrector"])
    for got_leaf, want_leaf in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_leaf, want_leaf)
    assert got_accuracy == want_accuracy and max(want_accuracy) > 0  # the held-out selection saw the same
    assert zero["corrector"] == first["corrector"]
