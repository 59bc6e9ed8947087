"""Ctrl-C at any moment of a real ``jaxlogit logits`` run: status 130, one line, and a rerun
that ends byte-identical to an uninterrupted run (subprocesses on a random-weights backbone)."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxlogit import _interrupt, models, training

ARCH = "resnet_compact"
LOGITS = ("logits", "--arch", ARCH, "--attack", "pgd", "--split", "test", "--limit", "12", "--quiet")


def cache_with_backbone(root: pathlib.Path) -> pathlib.Path:
    """A cache holding a random-weights backbone where ``jaxlogit logits`` looks for its default."""
    spec = models.spec(ARCH)
    variables = models.init(models.create(ARCH), jax.random.key(0), spec.input_shape)
    target = training.backbone_dir(training.default_config(ARCH), root)
    models.save_checkpoint(target, ARCH, variables, {"mean": list(spec.mean), "std": list(spec.std)})
    return root


def start(cache: pathlib.Path, jax_cache: pathlib.Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(jax_cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "jaxlogit", *LOGITS, "--cache-dir", str(cache)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def store_files(cache: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``cache/logits`` (relative name -> bytes) but the event logs, which hold times."""
    root = cache / "logits"
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "events.jsonl"
    }


@pytest.mark.slow
def test_ctrl_c_at_random_moments_exits_130_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
    reference = cache_with_backbone(tmp_path / "reference")
    interrupted = tmp_path / "interrupted"
    shutil.copytree(reference, interrupted)
    jax_cache = tmp_path / "jax-cache"
    proc = start(reference, jax_cache)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    moments = np.random.default_rng(0).uniform(0.3, 9.0, size=4)
    for moment in sorted(moments):
        proc = start(interrupted, jax_cache)
        time.sleep(moment)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode in (130, 0), (moment, proc.returncode, err)
        assert "Traceback" not in err, err
        if proc.returncode == 130:
            assert err.strip().splitlines() == [_interrupt.MESSAGE]
    proc = start(interrupted, jax_cache)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert store_files(interrupted) == store_files(reference)
    assert not any(p.name.endswith((".tmp", ".lock")) for p in interrupted.rglob("*"))
