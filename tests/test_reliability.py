"""Reliability: nothing of the user's is destroyed, damage is detected, faults are one line."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import _lock, attacks, corrector, models, paths, pipeline, store, training
from jaxlogit.cli import _info, main
from jaxlogit.errors import JaxlogitError

ARCH = "resnet_compact"


def run_main(capsys, *args) -> tuple[int, str, str]:
    """Runs the CLI in this process: (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(code: int, err: str, *words: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def random_variables(seed: int) -> dict:
    module = models.create(ARCH)
    return models.init(module, jax.random.key(seed), models.spec(ARCH).input_shape)


def leaves_equal(a, b) -> bool:
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b))
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in pairs)


@pytest.fixture
def fake_weights(monkeypatch, tmp_path):
    """`convert` without torch: the state_dict reader and importer give random compact weights."""
    variables = random_variables(1)
    monkeypatch.setattr(_info, "_load_state_dict", lambda weights: {})
    monkeypatch.setattr(models, "from_torchvision", lambda arch, state: variables)
    return variables


# 1. convert --out never deletes what it did not write


def convert(capsys, out, *extra) -> tuple[int, str, str]:
    return run_main(capsys, "convert", "--arch", ARCH, "--weights", "w.pth", "--out", out, *extra)


def test_convert_refuses_the_current_folder_and_keeps_its_files(capsys, tmp_path, monkeypatch, fake_weights):
    (tmp_path / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(tmp_path)
    code, _, err = convert(capsys, ".", "--force")
    assert_one_line(code, err, "not empty", "new or empty folder")
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_convert_refuses_a_file(capsys, tmp_path, fake_weights):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, _, err = convert(capsys, str(target), "--force")
    assert_one_line(code, err, "is a file")
    assert target.read_text() == "keep me"


def test_convert_replaces_a_checkpoint_of_the_same_arch_only_with_force(capsys, tmp_path, fake_weights):
    target = tmp_path / "ckpt"
    models.save_checkpoint(target, ARCH, random_variables(0))
    code, _, err = convert(capsys, str(target))
    assert_one_line(code, err, "--force")
    assert leaves_equal(models.load_checkpoint(target)[1], random_variables(0))
    code, out, err = convert(capsys, str(target), "--force")
    assert code == 0, err
    assert leaves_equal(models.load_checkpoint(target)[1], fake_weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary or old folder left


def test_convert_never_replaces_another_arch(capsys, tmp_path, fake_weights):
    target = tmp_path / "ckpt"
    models.save_checkpoint(
        target,
        "vgg_compact",
        models.init(models.create("vgg_compact"), jax.random.key(0), models.spec("vgg_compact").input_shape),
    )
    code, _, err = convert(capsys, str(target), "--force")
    assert_one_line(code, err, "vgg_compact")
    assert models.load_checkpoint(target)[2]["arch"] == "vgg_compact"


def test_convert_into_an_empty_folder_writes_the_checkpoint(capsys, tmp_path, fake_weights):
    target = tmp_path / "empty"
    target.mkdir()
    code, _, err = convert(capsys, str(target))
    assert code == 0, err
    assert leaves_equal(models.load_checkpoint(target)[1], fake_weights)


def test_convert_into_a_read_only_folder_fails_at_once(capsys, tmp_path, monkeypatch, fake_weights):
    parent = tmp_path / "ro"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: not (pathlib.Path(p) == parent and mode & os.W_OK) and real_access(p, mode),
    )
    code, _, err = convert(capsys, str(parent / "ckpt"))
    assert_one_line(code, err, "read-only", str(parent))
    assert list(parent.iterdir()) == []


# 3. checksums: damage is an error naming the file, and the builder repairs it


def flip_byte(path: pathlib.Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def produce(start: int, stop: int) -> dict:
    rows = np.arange(start, stop)
    logits = np.stack([np.sin(rows * (c + 1.0)) for c in range(10)], axis=1).astype(np.float32)
    return {
        "clean_logits": logits,
        "adv_logits": -logits,
        "labels": (rows % 10).astype(np.int32),
        "success": rows % 2 == 0,
        "norm": rows.astype(np.float32) / 100,
    }


def build_store(directory: pathlib.Path, produce_fn=produce) -> store.LogitStore:
    return store.build(directory, 50, produce_fn, shard_size=16, config={"test": 1}, progress=False)


def files_of(directory: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_flipped_byte_in_a_shard_is_an_error_naming_it_and_build_repairs_it(tmp_path):
    directory = tmp_path / "store"
    build_store(directory)
    original = files_of(directory)
    shard = directory / "shard-00001.adv_logits.npy"
    flip_byte(shard, offset=len(shard.read_bytes()) - 3)  # inside the data, not the header
    opened = store.open(directory)
    np.asarray(opened.shard("adv_logits", 0))  # an intact shard still reads
    with pytest.raises(store.DamagedStore, match=r"shard-00001\.adv_logits\.npy is damaged.*jaxlogit logits"):
        opened["adv_logits"]
    calls = []
    rebuilt = build_store(directory, lambda a, b: calls.append(a) or produce(a, b))
    assert calls == [16, 32, 48]  # from the damaged shard on, not from scratch
    assert files_of(directory) == original
    np.testing.assert_array_equal(rebuilt["adv_logits"], produce(0, 50)["adv_logits"])


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_manifest_or_truncated_shard_is_one_line_and_build_repairs_it(tmp_path, damage):
    directory = tmp_path / "store"
    build_store(directory)
    original = files_of(directory)
    target = directory / ("manifest.json" if damage == "flip" else "shard-00002.labels.npy")
    if damage == "flip":
        target.write_text(target.read_text().replace('"shard_size": 16', '"shard_size": 17'))
    else:
        target.write_bytes(target.read_bytes()[:-7])
    with pytest.raises(store.DamagedStore, match=target.name) as err:
        opened = store.open(directory)
        opened["labels"]
    assert "\n" not in str(err.value)
    assert store.is_complete(directory) == (damage == "truncate")  # a damaged manifest: not complete
    build_store(directory)
    assert files_of(directory) == original


def test_stores_written_before_digests_are_read_unverified(tmp_path):
    directory = tmp_path / "store"
    build_store(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    for field in ("digests", "sha256"):
        manifest.pop(field)
    (directory / "manifest.json").write_text(json.dumps({**manifest, "version": 1}))
    np.testing.assert_array_equal(store.open(directory)["norm"], produce(0, 50)["norm"])


def test_a_run_that_fails_before_its_first_shard_leaves_nothing(tmp_path):
    def failing(start, stop):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        build_store(tmp_path / "store", failing)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_backbone_is_an_error_and_backbone_train_replaces_it(tmp_path, monkeypatch):
    config = training.default_config(ARCH)
    directory = training.backbone_dir(config, tmp_path)
    models.save_checkpoint(directory, ARCH, random_variables(0))
    state_files = sorted(
        (p for p in (directory / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    flip_byte(state_files[-1])
    with pytest.raises(JaxlogitError, match=r"corrupt checkpoint .*SHA-256.*backbone train") as err:
        training.ensure_backbone(config, cache=tmp_path)
    assert "\n" not in str(err.value)

    def retrain(config, target, data_dir, progress):  # stands in for the real training
        models.save_checkpoint(target, ARCH, random_variables(2))
        return training.load_backbone(target)

    monkeypatch.setattr(training, "_train_and_save", retrain)
    rebuilt = training.ensure_backbone(config, cache=tmp_path, rebuild=True)
    assert leaves_equal(rebuilt.variables, random_variables(2))
    assert leaves_equal(training.ensure_backbone(config, cache=tmp_path).variables, random_variables(2))


def test_a_damaged_corrector_is_an_error_and_correct_train_replaces_it(tmp_path):
    logits = build_store(tmp_path / "store")
    config = pipeline.CorrectorConfig(hidden=None, epochs=1, batch_size=8, holdout_fraction=0.0)
    trained = pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False)
    kernel = np.asarray(trained.params["output"]["kernel"])
    params_files = sorted(
        (p for p in (trained.directory / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    flip_byte(params_files[-1])
    with pytest.raises(JaxlogitError, match=r"damaged corrector .*SHA-256.*correct train"):
        pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False)
    again = pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False, rebuild=True)
    np.testing.assert_array_equal(np.asarray(again.params["output"]["kernel"]), kernel)
    pipeline.ensure_corrector(logits, config, cache=tmp_path, progress=False)  # intact again


# 4. inputs checked at the boundary


def linear_logits(x):
    """A fixed linear model on 4x4x1 images with 3 classes."""
    w = jnp.arange(48, dtype=jnp.float32).reshape(16, 3) / 48
    return x.reshape(x.shape[0], -1) @ w


def test_nan_pixels_are_rejected_by_every_attack():
    x = np.full((2, 4, 4, 1), 0.5, np.float32)
    x[1, 2, 2, 0] = np.nan
    y = np.zeros(2, np.int32)
    for run in (
        lambda: attacks.pgd(linear_logits, x, y, key=jax.random.key(0)),
        lambda: attacks.mim(linear_logits, x, y),
        lambda: attacks.deepfool(linear_logits, x, y, candidates=3),
        lambda: attacks.cw_l2(linear_logits, x, y, steps=2, search_steps=1),
    ):
        with pytest.raises(JaxlogitError, match="NaN pixels"):
            run()


@pytest.mark.parametrize(
    "eps, words",
    [
        (16, ("16/255", "0.06275")),
        (0.0, ("(0, 1]",)),
        (-0.1, ("(0, 1]",)),
        (float("nan"), ("(0, 1]",)),
        (1000.0, ("(0, 1]",)),
    ],
)
def test_eps_outside_zero_one_is_refused_with_a_hint(eps, words):
    with pytest.raises(JaxlogitError) as err:
        pipeline.AttackConfig("pgd", eps=eps)
    for word in words:
        assert word in str(err.value)
    assert pipeline.AttackConfig("pgd", eps=1.0).eps == 1.0


def test_cli_eps_16_is_one_line_before_any_work(capsys, tmp_path):
    code, _, err = run_main(
        capsys,
        "logits",
        "--arch",
        ARCH,
        "--attack",
        "pgd",
        "--split",
        "test",
        "--eps",
        "16",
        "--cache-dir",
        str(tmp_path),
    )
    assert_one_line(code, err, "16/255", "0.06275")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "option, value, word",
    [
        ("--lr", "nan", "--lr"),
        ("--lr", "-0.001", "--lr"),
        ("--lr", "inf", "--lr"),
        ("--hidden", "-1", "--hidden"),
    ],
)
def test_cli_bad_corrector_settings_are_one_line_before_any_work(capsys, tmp_path, option, value, word):
    code, _, err = run_main(
        capsys,
        "correct",
        "train",
        "--arch",
        ARCH,
        "--attack",
        "pgd",
        option,
        value,
        "--cache-dir",
        str(tmp_path),
    )
    assert_one_line(code, err, word)
    assert list(tmp_path.iterdir()) == []


def tiny_training_data(num_classes=10, n=64):
    data = produce(0, n)
    return {k: data[k] for k in ("clean_logits", "adv_logits", "labels")}


@pytest.mark.parametrize(
    "change, words",
    [
        ({"lr": float("nan")}, ("lr",)),
        ({"lr": -1e-3}, ("lr",)),
        ({"hidden": -1}, ("hidden",)),
        ({"labels": np.full(64, 10, np.int32)}, ("labels", "[0, 10)")),
        ({"adv_logits": np.full((64, 10), np.nan, np.float32)}, ("adv_logits", "NaN")),
    ],
)
def test_corrector_train_refuses_garbage(tmp_path, change, words):
    data = tiny_training_data()
    settings = {"hidden": None, "lr": 1e-3}
    for key, value in change.items():
        (data if key in data else settings)[key] = value
    with pytest.raises(JaxlogitError) as err:
        corrector.train(
            data, num_classes=10, epochs=1, batch_size=8, key=jax.random.key(0), progress=False, **settings
        )
    for word in words:
        assert word in str(err.value)


def test_corrector_refuses_logits_of_the_wrong_width_and_labels_out_of_range():
    module = corrector.Corrector(num_classes=10, hidden=None)
    params = corrector.init_params(module, key=jax.random.key(0))
    wide = np.zeros((4, 12), np.float32)
    with pytest.raises(JaxlogitError, match="12 logits per row but the corrector takes 10"):
        corrector.corrected_logits(params, module, wide)
    with pytest.raises(JaxlogitError, match="12 logits per row"):
        corrector.eval_fn(module, params)(wide)
    with pytest.raises(JaxlogitError, match=r"\[0, 10\)"):
        corrector.evaluate(params, module, np.zeros((4, 10), np.float32), np.array([0, 1, 2, 10]))
    with pytest.raises(JaxlogitError, match="NaN"):
        corrector.corrected_logits(params, module, np.full((4, 10), np.nan, np.float32))


def test_attack_batch_is_clamped_to_the_data(capsys, tmp_path, monkeypatch):
    cache_with_random_backbone(tmp_path)
    seen = []

    def spy(fn, *arrays, batch_size):
        seen.append((len(arrays[0]), batch_size))
        raise JaxlogitError("stop here")

    monkeypatch.setattr(pipeline.batching, "map_batches", spy)
    code, _, err = run_main(
        capsys,
        "attack",
        "--arch",
        ARCH,
        "--attack",
        "pgd",
        "--n",
        "10",
        "--batch",
        "100000",
        "--cache-dir",
        str(tmp_path),
    )
    assert_one_line(code, err, "stop here")
    assert seen == [(10, 10)]


def cache_with_random_backbone(root: pathlib.Path) -> None:
    spec = models.spec(ARCH)
    target = training.backbone_dir(training.default_config(ARCH), root)
    meta = {"mean": list(spec.mean), "std": list(spec.std)}
    models.save_checkpoint(target, ARCH, random_variables(0), meta)


# 5. filesystem faults are one line; --cache-dir "" is an error


def test_empty_cache_dir_is_an_error(capsys):
    code, _, err = run_main(capsys, "backbone", "eval", "--arch", ARCH, "--cache-dir", "")
    assert_one_line(code, err, "--cache-dir is empty")


def test_a_file_as_cache_dir_is_one_line(capsys, tmp_path):
    not_a_folder = tmp_path / "passwd"
    not_a_folder.write_text("root:x:0:0")
    code, _, err = run_main(capsys, "backbone", "eval", "--arch", ARCH, "--cache-dir", str(not_a_folder))
    assert_one_line(code, err, "is a file")
    assert not_a_folder.read_text() == "root:x:0:0"


def test_a_read_only_cache_is_one_line_before_training(capsys, tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: not (pathlib.Path(p) == tmp_path and mode & os.W_OK) and real_access(p, mode),
    )
    monkeypatch.setattr(training, "_train_and_save", lambda *a: pytest.fail("trained into a read-only cache"))
    code, _, err = run_main(capsys, "backbone", "train", "--arch", ARCH, "--cache-dir", str(tmp_path))
    assert_one_line(code, err, "read-only", str(tmp_path))


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOTDIR])
def test_filesystem_faults_anywhere_are_one_line(capsys, tmp_path, monkeypatch, number):
    def fail(*args, **kwargs):
        try:
            raise OSError(number, os.strerror(number), str(tmp_path / "shard.npy"))
        except OSError as err:
            raise RuntimeError("a library's wrapper") from err  # orbax wraps them

    monkeypatch.setattr(training, "ensure_backbone", fail)
    code, _, err = run_main(capsys, "backbone", "eval", "--arch", ARCH, "--cache-dir", str(tmp_path))
    assert_one_line(code, err, os.strerror(number), "shard.npy")


def test_a_full_disk_while_writing_a_store_leaves_no_partial_files(tmp_path, monkeypatch):
    from jaxlogit.store import _writer

    def full_disk(file, array, allow_pickle):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_writer.np, "save", full_disk)
    with pytest.raises(OSError) as err:
        build_store(tmp_path / "store")
    assert paths.filesystem_fault(err.value).startswith("No space left on device")
    assert list(tmp_path.iterdir()) == []


# 6. one writer per artifact; temporary names never shared

BUILDER = """
import sys, time, numpy as np
sys.path.insert(0, {tests!r})
from test_reliability import build_store, produce
def slow(start, stop):
    with open({log!r}, "a") as f:
        f.write(f"{{start}}\\n")
    time.sleep(0.3)
    return produce(start, stop)
build_store(__import__("pathlib").Path({store!r}), slow)
"""


def test_two_builders_of_one_store_do_the_work_once(tmp_path):
    log, target = tmp_path / "produced.txt", tmp_path / "store"
    code = BUILDER.format(tests=str(pathlib.Path(__file__).parent), log=str(log), store=str(target))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert log.read_text().split() == ["0", "16", "32", "48"]  # each shard produced once, by one of them
    assert sum("waiting for pid" in e for e in errs) == 1, errs
    np.testing.assert_array_equal(store.open(target)["labels"], produce(0, 50)["labels"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["produced.txt", "store"]  # lock file removed


def test_the_lock_names_its_holder_and_releases_on_exit(tmp_path):
    messages = []
    with _lock.exclusive(tmp_path / "artifact"):
        assert _lock.lock_path(tmp_path / "artifact").read_text().strip() == str(os.getpid())
        with pytest.raises(BlockingIOError):
            with _lock.exclusive(tmp_path / "artifact", wait=False, log=messages.append):
                pass
    with _lock.exclusive(tmp_path / "artifact", wait=False):
        pass
    assert not _lock.lock_path(tmp_path / "artifact").exists()


def test_concurrent_atomic_writes_of_one_file_never_collide(tmp_path):
    target = tmp_path / "record.json"
    failures = []

    def writer(i):
        try:
            for j in range(40):
                paths.write_json_atomic(target, {"writer": i, "round": j})
        except Exception as err:  # the old shared ".tmp" name raised FileNotFoundError here
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert json.loads(target.read_text())["round"] == 39
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
