"""The corrector: layout, Algorithm 1's mixing, coupled-L2 Adam, data parallelism, resume, recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlogit import corrector
from jaxlogit.corrector import _train
from jaxlogit.errors import JaxlogitError

C, D = 5, 64

# Synthetic logits: clean ones peak at the true class; the "attack" is a learnable map that
# moves the peak to the next class and raises every logit (as PGD raises the mean logit).
SYNTHETIC_SOURCE = """
import numpy as np

def synthetic_logits(n, c, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n).astype(np.int32)
    clean = (4.0 * np.eye(c)[labels] + rng.normal(size=(n, c))).astype(np.float32)
    adv = (np.roll(clean, 1, axis=1) + 3.0 + 0.5 * rng.normal(size=(n, c))).astype(np.float32)
    return {"clean_logits": clean, "adv_logits": adv, "labels": labels}
"""
_namespace: dict = {}
exec(SYNTHETIC_SOURCE, _namespace)
synthetic_logits = _namespace["synthetic_logits"]

FAST = dict(num_classes=C, hidden=D, batch_size=128, lr=3e-3, progress=False)


def tree_equal(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


@pytest.fixture(scope="module")
def trained():
    """A small corrector trained on synthetic logits, and a fresh test set."""
    result = corrector.train(synthetic_logits(4096, C, seed=0), epochs=8, key=jax.random.key(0), **FAST)
    return result, synthetic_logits(2000, C, seed=1)


def test_param_layout_two_layer_and_single_layer():
    two = corrector.init_params(corrector.Corrector(C, hidden=D), key=jax.random.key(0))
    one = corrector.init_params(corrector.Corrector(C, hidden=None), key=jax.random.key(0))
    assert jax.tree.map(jnp.shape, two) == {
        "hidden": {"kernel": (C, D), "bias": (D,)},
        "output": {"kernel": (D, C), "bias": (C,)},
    }
    assert jax.tree.map(jnp.shape, one) == {"output": {"kernel": (C, C), "bias": (C,)}}
    assert corrector.module_from_params(one) == corrector.Corrector(C, hidden=None)


def test_dropout_only_in_training_mode():
    module = corrector.Corrector(C, hidden=D)
    params = corrector.init_params(module, key=jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (8, C))
    eval_a = module.apply({"params": params}, z)
    train_a, train_b = (
        module.apply({"params": params}, z, deterministic=False, rngs={"dropout": jax.random.key(k)})
        for k in (2, 3)
    )
    np.testing.assert_array_equal(eval_a, corrector.eval_fn(module, params)(z))
    assert not np.allclose(train_a, train_b) and not np.allclose(train_a, eval_a)


@pytest.mark.parametrize("keep_prob", [0.5, 0.3])
def test_byte_dropout_keeps_units_with_probability_keep_prob(keep_prob):
    from jaxlogit.corrector._module import byte_dropout

    h = jnp.ones((256, 1001))
    out = np.asarray(byte_dropout(h, keep_prob, key=jax.random.key(0)))
    kept = out != 0
    effective = round(256 * keep_prob) / 256  # the keep probability on the 1/256 grid
    assert abs(kept.mean() - effective) < 4.5 * np.sqrt(effective * (1 - effective) / kept.size)
    np.testing.assert_allclose(out[kept], 1 / effective, rtol=1e-6)  # inverted dropout: E[out] = h
    assert 0.2 < kept[:, -1].mean() and kept[0].mean() != kept[1].mean()  # every column and row drawn


def test_mixing_picks_clean_rows_with_probability_p():
    batch, steps, p = 256, 200, 0.3
    clean = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.float32)[:, None], (batch, C))
    adv = -1.0 - clean
    mix = jax.jit(
        lambda step: corrector.mix_batch(
            clean, adv, key=jax.random.fold_in(jax.random.key(7), step), p_clean=p
        )
    )
    fractions = []
    for step in range(steps):
        z, is_clean = mix(step)
        np.testing.assert_array_equal(z, np.where(np.asarray(is_clean)[:, None], clean, adv))
        fractions.append(float(np.mean(is_clean)))
    sigma = np.sqrt(p * (1 - p) / (batch * steps))
    assert abs(np.mean(fractions) - p) < 4.5 * sigma
    assert np.std(fractions) > 0  # per-example draws, not one coin per batch
    assert len({tuple(np.asarray(mix(s)[1])) for s in range(5)}) == 5  # a fresh draw each step


def test_training_steps_mix_with_probability_p(trained):
    result, _ = trained
    n = result.clean_fractions.size * 128
    assert abs(float(np.mean(result.clean_fractions)) - 0.3) < 4.5 * np.sqrt(0.3 * 0.7 / n)


def test_coupled_weight_decay_matches_torch_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3)).astype(np.float32), "b": rng.normal(size=(3,)).astype(np.float32)}
    grads = [
        {k: (1e-4 * rng.normal(size=v.shape)).astype(np.float32) for k, v in params.items()} for _ in range(3)
    ]

    def run_optax(optimizer):
        p, state = params, optimizer.init(params)
        for g in grads:
            updates, state = optimizer.update(g, state, p)
            p = optax.apply_updates(p, updates)
        return p

    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    torch_adam = torch.optim.Adam(tensors.values(), lr=5e-5, weight_decay=1e-4)
    for g in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k])
        torch_adam.step()
    expected = {k: t.detach().numpy() for k, t in tensors.items()}

    ours = run_optax(corrector.corrector_optimizer(5e-5, 1e-4))
    decoupled = run_optax(optax.adamw(5e-5, weight_decay=1e-4))
    for k in params:
        np.testing.assert_allclose(ours[k], expected[k], rtol=0, atol=2e-7)
        assert np.max(np.abs(decoupled[k] - expected[k])) > 1e-6  # the test tells coupled from AdamW


def test_training_recovers_adversarial_accuracy(trained):
    result, test = trained
    labels = test["labels"]
    uncorrected = float(np.mean(np.argmax(test["adv_logits"], -1) == labels))
    corrected = corrector.evaluate(result.params, result.module, test["adv_logits"], labels)
    clean = corrector.evaluate(result.params, result.module, test["clean_logits"], labels)
    assert uncorrected < 0.05 and corrected > 0.85 and clean > 0.8
    assert result.losses[-20:].mean() < 0.5 * result.losses[:20].mean()


def test_model_selection_uses_held_out_training_rows(trained):
    result, _ = trained
    data = synthetic_logits(4096, C, seed=0)
    rows = result.holdout_indices
    assert len(rows) == round(0.1 * 4096) and np.all(np.diff(rows) > 0)
    assert result.best_epoch == int(np.argmax(result.holdout_accuracy)) + 1
    held = np.concatenate([data["clean_logits"][rows], data["adv_logits"][rows]])
    accuracy = corrector.evaluate(result.params, result.module, held, np.tile(data["labels"][rows], 2))
    assert accuracy == pytest.approx(result.holdout_accuracy[result.best_epoch - 1], abs=1e-9)


class Interrupted(Exception):
    """Stands for a crash or Ctrl-C in the middle of training."""


def test_resume_after_interruption_equals_uninterrupted(tmp_path, monkeypatch):
    data = synthetic_logits(1024, C, seed=2)
    settings = dict(epochs=3, key=jax.random.key(3), **FAST)
    whole = corrector.train(data, checkpoint_dir=tmp_path / "whole", **settings)

    real_holdout_accuracy = _train._holdout_accuracy
    calls = []

    def crash_in_epoch_2(*args):
        calls.append(1)
        if len(calls) == 2:  # epoch 2 trained but not checkpointed: its work is lost
            raise Interrupted
        return real_holdout_accuracy(*args)

    monkeypatch.setattr(_train, "_holdout_accuracy", crash_in_epoch_2)
    with pytest.raises(Interrupted):
        corrector.train(data, checkpoint_dir=tmp_path / "resumed", **settings)
    monkeypatch.setattr(_train, "_holdout_accuracy", real_holdout_accuracy)
    resumed = corrector.train(data, checkpoint_dir=tmp_path / "resumed", resume=True, **settings)

    np.testing.assert_array_equal(resumed.losses, whole.losses)
    np.testing.assert_array_equal(resumed.holdout_accuracy, whole.holdout_accuracy)
    assert resumed.best_epoch == whole.best_epoch
    assert tree_equal(resumed.last_params, whole.last_params) and tree_equal(resumed.params, whole.params)


def test_checkpoints_refuse_other_runs(tmp_path):
    data = synthetic_logits(512, C, seed=2)
    settings = dict(epochs=1, key=jax.random.key(3), **FAST)
    corrector.train(data, checkpoint_dir=tmp_path, **settings)
    with pytest.raises(JaxlogitError, match="resume=True"):
        corrector.train(data, checkpoint_dir=tmp_path, **settings)
    with pytest.raises(JaxlogitError, match="another training run"):
        corrector.train(data, checkpoint_dir=tmp_path, resume=True, **{**settings, "key": jax.random.key(4)})


def test_save_load_round_trip(tmp_path, trained):
    result, test = trained
    corrector.save(tmp_path / "g", result.params, {"best_epoch": result.best_epoch}, module=result.module)
    module, params, meta = corrector.load(tmp_path / "g")
    assert module == result.module and meta == {"best_epoch": result.best_epoch}
    assert tree_equal(params, result.params)
    with pytest.raises(JaxlogitError, match="no corrector"):
        corrector.load(tmp_path / "missing")


def test_g_fn_jacobian_of_single_layer_is_its_kernel():
    module = corrector.Corrector(C, hidden=None)
    params = corrector.init_params(module, key=jax.random.key(5))
    z = jax.random.normal(jax.random.key(6), (3, C))
    jacobian = jax.vmap(jax.jacobian(lambda v: corrector.eval_fn(module, params)(v[None])[0]))(z)
    np.testing.assert_allclose(jacobian, np.broadcast_to(params["output"]["kernel"].T, (3, C, C)), rtol=1e-6)


DEVICES_SCRIPT = SYNTHETIC_SOURCE + textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from jaxlogit import corrector
    from jaxlogit.errors import JaxlogitError
    # A large weight decay breaks Adam's invariance to the gradient's scale, so gradients
    # summed over devices (4x too large) would change the trajectory.
    result = corrector.train(synthetic_logits(1024, 5, seed=4), num_classes=5, hidden=32, epochs=2,
                             batch_size=64, lr=1e-2, weight_decay=0.1, key=jax.random.key(5), progress=False)
    try:
        corrector.train(synthetic_logits(256, 5, seed=4), num_classes=5, hidden=32, epochs=1,
                        batch_size=66, key=jax.random.key(5), progress=False)
        error = None
    except JaxlogitError as e:
        error = str(e)
    np.savez(sys.argv[1], losses=result.losses, *jax.tree.leaves(result.last_params))
    print(json.dumps({"devices": result.num_devices, "error": error}))
""")


def test_one_and_four_devices_train_the_same(tmp_path):
    runs = {}
    for devices in (1, 4):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        }
        out = tmp_path / f"run{devices}.npz"
        runs[devices] = (
            out,
            subprocess.Popen(
                [sys.executable, "-c", DEVICES_SCRIPT, str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    results = {}
    for devices, (out, child) in runs.items():
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr
        results[devices] = (json.loads(stdout.strip().splitlines()[-1]), dict(np.load(out)))
    (info1, arrays1), (info4, arrays4) = results[1], results[4]
    assert info1 == {"devices": 1, "error": None}
    assert info4["devices"] == 4 and "not divisible by the 4 devices" in info4["error"]
    assert arrays1["losses"].shape == (2 * (1024 - 102) // 64,)
    np.testing.assert_allclose(arrays4["losses"], arrays1["losses"], rtol=2e-5, atol=1e-6)
    for name in arrays1:
        np.testing.assert_allclose(arrays4[name], arrays1[name], rtol=1e-4, atol=1e-5)


def test_adversarial_logits_only_where_the_attack_succeeded():
    clean = np.arange(6, dtype=np.float32).reshape(3, 2)
    adv = -clean
    picked = corrector.adversarial_or_clean(clean, adv, np.array([True, False, True]))
    np.testing.assert_array_equal(picked, [adv[0], clean[1], adv[2]])


def test_failed_rows_train_as_clean_logits_for_both_draws():
    data = synthetic_logits(512, C, seed=4)
    success = np.random.default_rng(0).random(512) < 0.6
    settings = dict(epochs=1, key=jax.random.key(5), **FAST)
    masked = corrector.train({**data, "success": success}, **settings)
    rule = {**data, "adv_logits": np.where(success[:, None], data["adv_logits"], data["clean_logits"])}
    by_hand = corrector.train(rule, **settings)
    np.testing.assert_array_equal(masked.losses, by_hand.losses)
    np.testing.assert_array_equal(masked.holdout_accuracy, by_hand.holdout_accuracy)
    assert tree_equal(masked.last_params, by_hand.last_params)
    ignored = corrector.train({**data, "success": success}, successful_only=False, **settings)
    np.testing.assert_array_equal(ignored.losses, corrector.train(data, **settings).losses)
    assert not np.array_equal(ignored.losses, masked.losses)
