"""Logit stores over every device: each device attacks its own rows with the one-device program, and
per-image keys make the store from 4 (forced CPU) devices byte-identical to the one-device store."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from jaxlogit import _mesh, _xla

TESTS = pathlib.Path(__file__).resolve().parent
ATTACKS = {"pgd": 1, "cw": 1}  # attack -> steps: a random start, and a search of its own (binary, C&W)

STORE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    from conftest import TEST_BACKBONE
    from jaxlogit import data, pipeline, training
    backbone_cache, store_cache, out, attacks = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
    backbone = training.ensure_backbone(TEST_BACKBONE, cache=backbone_cache, progress=False)
    split = data.load("fashion_mnist", "test")
    arrays, used = {}, {}
    for name, steps in attacks.items():
        attack = pipeline.AttackConfig(name, steps=steps)
        logits = pipeline.ensure_logits(backbone, attack, split, "test", limit=40, batch_size=8,
                                        cache=store_cache, progress=False)
        arrays.update({f"{name}.{key}": np.asarray(logits[key]) for key in logits.keys()})
        program = pipeline.attack_program(backbone.logits_fn(), attack)  # the store's, compiled
        rows = 8 * jax.device_count()
        x, y = split.get_batch(np.arange(rows))
        clean = program(x, y, np.arange(rows))[0]
        used[name] = sorted({shard.data.shape[0] for shard in clean.addressable_shards})
        used[name] += [len(clean.sharding.device_set)]
    np.savez(out, **arrays)
    print(json.dumps({"devices": jax.device_count(), "rows_and_devices": used}))
""")


def build_store(devices: int, backbone_cache: pathlib.Path, tmp_path: pathlib.Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }
    out, cache = tmp_path / f"store{devices}.npz", tmp_path / f"cache{devices}"
    argv = [sys.executable, "-c", STORE_SCRIPT, str(TESTS), str(backbone_cache), str(cache), str(out)]
    child = subprocess.Popen(
        [*argv, json.dumps(ATTACKS)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return out, child


def test_four_devices_build_the_store_of_one_device_byte_for_byte(trained_compact, test_cache, tmp_path):
    runs = {devices: build_store(devices, test_cache, tmp_path) for devices in (1, 4)}
    results = {}
    for devices, (out, child) in runs.items():
        stdout, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr
        results[devices] = (json.loads(stdout.strip().splitlines()[-1]), dict(np.load(out)))
    (info1, arrays1), (info4, arrays4) = results[1], results[4]
    # each device held 8 rows of the program's output, on 1 and on 4 devices
    assert info1 == {"devices": 1, "rows_and_devices": {name: [8, 1] for name in ATTACKS}}
    assert info4 == {"devices": 4, "rows_and_devices": {name: [8, 4] for name in ATTACKS}}
    assert sorted(arrays1) == sorted(arrays4) and len(arrays1) == 5 * len(ATTACKS)
    for key, array in arrays1.items():
        assert array.shape[0] == 40 and np.array_equal(arrays4[key], array), key


@pytest.mark.parametrize("separate_calls", [True, False])
def test_over_rows_gives_each_device_its_own_rows(separate_calls):
    mesh = _mesh.data_mesh()
    double = _mesh.over_rows(lambda x: (2 * x, x.shape[0] + 0 * x[:, 0]), mesh, separate_calls=separate_calls)
    rows = _mesh.global_rows(3, mesh)
    doubled, seen = double(np.arange(rows * 2, dtype=np.float32).reshape(rows, 2))
    np.testing.assert_array_equal(np.asarray(doubled), 2 * np.arange(rows * 2).reshape(rows, 2))
    np.testing.assert_array_equal(np.asarray(seen), np.full(rows, 3))  # each device saw 3 rows
    assert doubled.sharding.is_equivalent_to(_mesh.batch_sharding(mesh), 2)


def test_one_shard_map_program_on_one_device_is_the_one_device_program(trained_compact):
    """The GPU/TPU path: on a mesh of one device it changes no bit of the backbone's logits."""
    mesh = _mesh.data_mesh(jax.devices()[:1])
    logits_fn = trained_compact.backbone.logits_fn()
    x = trained_compact.x[:8]
    sharded = _mesh.over_rows(logits_fn, mesh, separate_calls=False)(x)
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(_xla.jit(logits_fn)(x)))
