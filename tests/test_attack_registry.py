"""The attack registry: one table that the pipeline, the CLI and the bench read.

An unknown name is one line everywhere; the registry route runs the paper's settings bit for bit;
an attack registered from outside the library (here a one-step FGSM) runs through
``jaxlogit attack`` and the logit store with no library file changed.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TEST_BACKBONE

from jaxlogit import attacks, bench, data, models, pipeline, training
from jaxlogit.attacks import _builtin
from jaxlogit.bench import _attacks
from jaxlogit.cli import cli, main
from jaxlogit.errors import JaxlogitError

PAPER = ("pgd", "mim", "deepfool", "cw")
TOY = "toy_fgsm"


def fgsm(logits_fn, x, y, *, key, eps, steps):
    """The toy: one signed cross-entropy gradient step of size ``eps`` (``key``, ``steps`` unused)."""
    grad = jax.grad(lambda images: attacks.cross_entropy(logits_fn(images), y).sum())(x)
    x_adv = jnp.clip(x + eps * jnp.sign(grad), 0.0, 1.0)
    logits = logits_fn(x_adv)
    norm = jnp.max(jnp.abs(x_adv - x), axis=(1, 2, 3))
    return attacks.AttackResult(x_adv, jnp.argmax(logits, -1) != y, logits, norm, jnp.ones_like(y))


@pytest.fixture
def toy_attack():
    """FGSM registered for the test only (unregistered afterwards, even on failure)."""
    spec = attacks.register(
        attacks.AttackSpec(
            TOY, "linf", True, {"steps": 1}, fgsm, work=lambda result, num_classes: attacks.Work(2, 1)
        )
    )
    try:
        yield spec
    finally:
        attacks.unregister(TOY)


@pytest.fixture(scope="module")
def random_compact():
    """A random-init resnet_compact as ``logits_fn`` and 4 random images with labels."""
    spec = models.spec("resnet_compact")
    module = models.create(spec.name)
    variables = models.init(module, jax.random.key(0), spec.input_shape)
    logits_fn = models.logits_fn(module, variables, mean=spec.mean, std=spec.std)
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.uniform(kx, (4, *spec.input_shape))
    y = jax.random.randint(ky, (4,), 0, 10)
    return logits_fn, x, y


def jitted_fgsm(logits_fn, x, y, eps):
    """The toy run directly (compiled: eager op-by-op differentiation of a backbone is slow)."""
    run = jax.jit(lambda images, labels: fgsm(logits_fn, images, labels, key=None, eps=eps, steps=None))
    return run(x, y)


def assert_one_line(message: str, *words: str) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message, message
    for word in words:
        assert word in message, message


# --- the table itself -----------------------------------------------------------------------------


def test_the_paper_attacks_are_registered_in_order_with_their_norms():
    assert attacks.names()[:4] == PAPER
    assert [attacks.get(n).norm for n in PAPER] == ["linf", "linf", "l2", "l2"]
    assert [attacks.get(n).takes_eps for n in PAPER] == [True, True, False, False]
    assert pipeline.AttackConfig("pgd").label == "pgd@16/255"
    assert pipeline.AttackConfig("cw", eps=8 / 255).label == "cw"


def test_registering_a_taken_name_is_refused_and_changes_nothing():
    before = attacks.get("pgd")
    with pytest.raises(JaxlogitError, match="already registered") as err:
        attacks.register(attacks.AttackSpec("pgd", "l2", False, {}, fgsm))
    assert_one_line(str(err.value), "pgd")
    assert attacks.get("pgd") is before


def test_a_spec_with_an_unknown_norm_or_a_path_like_name_is_refused():
    with pytest.raises(JaxlogitError, match="linf, l2"):
        attacks.AttackSpec("toy", "l1", True, {}, fgsm)
    with pytest.raises(JaxlogitError, match="lowercase letters"):
        attacks.AttackSpec("../toy", "linf", True, {}, fgsm)


def test_settings_are_read_only():
    with pytest.raises(TypeError):
        attacks.get("cw").settings["lr"] = 1.0


# --- an unknown name: one line from every entry point ------------------------------------------


def test_unknown_name_from_the_registry_and_the_pipeline():
    for call in (lambda: attacks.get("nope"), lambda: pipeline.AttackConfig("nope")):
        with pytest.raises(JaxlogitError) as err:
            call()
        assert_one_line(str(err.value), "'nope'", *PAPER)


@pytest.mark.parametrize(
    "argv",
    [
        ["attack", "--arch", "resnet_compact", "--attack", "nope"],
        ["logits", "--arch", "resnet_compact", "--attack", "nope", "--split", "test"],
        ["correct", "train", "--arch", "resnet_compact", "--attack", "nope"],
        ["correct", "eval", "--arch", "resnet_compact", "--attack", "pgd", "--eval-attack", "nope"],
        ["bench", "--attack", "nope"],
    ],
)
def test_unknown_name_on_the_command_line_is_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert_one_line(lines[0], "'nope'", *PAPER)


def test_unknown_name_from_the_bench():
    x, y = np.zeros((2, 28, 28, 1), np.float32), np.zeros(2, np.int32)
    calls = [
        lambda: bench.BenchConfig(attacks=("pgd", "nope")),
        lambda: bench.jax_attack("nope", lambda images: images.reshape(2, -1)[:, :10], x, y),
        lambda: bench.jax_work("nope", None, 10),
    ]
    pytest.importorskip("torchattacks")  # the torch side only exists with the torch extra
    from jaxlogit.bench import _torch

    calls.append(lambda: _torch.torchattacks_attack("nope", None))
    for call in calls:
        with pytest.raises(JaxlogitError) as err:
            call()
        assert_one_line(str(err.value), "'nope'", *PAPER)


def test_unknown_name_in_the_benchmark_script(capsys):
    from benchmarks import bench_attacks

    with pytest.raises(SystemExit) as exit_:
        bench_attacks.main(["--compact-attacks", "nope"])
    assert exit_.value.code == 2
    assert "'nope'" in capsys.readouterr().err


# --- the registry route runs the paper's settings bit for bit -----------------------------------


def direct_paper_call(name, logits_fn, x, y, key):
    """The paper's settings (SPEC.md) written out, calling the attack functions directly."""
    eps = 16 / 255
    if name == "pgd":
        return attacks.pgd(logits_fn, x, y, key=key, eps=eps, steps=10, step_size=eps / 8, random_start=True)
    if name == "mim":
        return attacks.mim(logits_fn, x, y, eps=eps, steps=10, step_size=eps / 10, decay=1.0)
    if name == "deepfool":
        return attacks.deepfool(logits_fn, x, y, candidates=10, max_iter=100, overshoot=0.02)
    assert name == "cw"
    return attacks.cw_l2(
        logits_fn, x, y, steps=25, search_steps=4, initial_const=10.0, confidence=0.0, lr=0.01
    )


@pytest.mark.parametrize("name", PAPER)
def test_pipeline_and_bench_routes_equal_direct_calls_bitwise(name, random_compact):
    logits_fn, x, y = random_compact
    key = jax.random.key(3)
    expected = direct_paper_call(name, logits_fn, x, y, key)
    routes = {
        "pipeline": pipeline.run_attack(pipeline.AttackConfig(name), logits_fn, x, y, key=key),
        "bench": bench.jax_attack(name, logits_fn, x, y, seed=3)(),
    }
    for route, got in routes.items():
        for field, want in expected._asdict().items():
            np.testing.assert_array_equal(
                np.asarray(getattr(got, field)), np.asarray(want), err_msg=f"{route} {name} {field}"
            )


@pytest.mark.parametrize("name", ["pgd", "mim"])
def test_a_steps_override_and_eps_reach_the_attack(name, random_compact):
    logits_fn, x, y = random_compact
    key = jax.random.key(3)
    eps = 8 / 255
    direct = {
        "pgd": lambda: attacks.pgd(logits_fn, x, y, key=key, eps=eps, steps=2, step_size=eps / 8),
        "mim": lambda: attacks.mim(logits_fn, x, y, eps=eps, steps=2, step_size=eps / 2),
    }[name]()
    got = pipeline.run_attack(pipeline.AttackConfig(name, eps=eps, steps=2), logits_fn, x, y, key=key)
    np.testing.assert_array_equal(np.asarray(got.x_adv), np.asarray(direct.x_adv))


def test_an_lr_override_reaches_c_and_w_and_only_attacks_that_take_one(monkeypatch):
    received = {}

    def record(logits_fn, x, y, **settings):
        received.update(settings)
        return "result"

    monkeypatch.setattr(_builtin, "cw_l2", record)
    config = pipeline.AttackConfig("cw", steps=2, lr=0.05)
    assert pipeline.run_attack(config, None, None, None, key=jax.random.key(0)) == "result"
    assert (received["lr"], received["steps"], received["search_steps"]) == (0.05, 2, 4)
    pipeline.run_attack(pipeline.AttackConfig("cw"), None, None, None, key=jax.random.key(0))
    assert (received["lr"], received["steps"]) == (0.01, 25)  # unset: the paper's
    assert config.label == "cw lr=0.05 steps=2"
    with pytest.raises(JaxlogitError, match="takes no lr"):
        pipeline.AttackConfig("pgd", lr=0.05)
    # Unset, lr stays out of store keys (earlier stores keep theirs); set, it makes another key.
    unset = pipeline.AttackConfig("cw").cache_key()
    assert unset == {"name": "cw", "eps": 16 / 255, "steps": None, "seed": 0}
    assert config.cache_key()["lr"] == 0.05


# --- an attack registered from outside the library -------------------------------------------------


def test_a_registered_toy_runs_through_jaxlogit_attack(toy_attack, trained_compact, test_cache, monkeypatch):
    monkeypatch.setattr(training, "default_config", lambda arch, **kw: TEST_BACKBONE)
    eps, n = 0.05, 48
    argv = [
        "attack",
        "--arch",
        "resnet_compact",
        "--attack",
        TOY,
        "--eps",
        str(eps),
        "--n",
        str(n),
        "--batch",
        "16",
        "--cache-dir",
        str(test_cache),
    ]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    out = result.output
    x, y = trained_compact.x[:n], trained_compact.y[:n]
    direct = jitted_fgsm(trained_compact.logits_fn, x, y, eps)
    direct_accuracy = float(np.mean(np.asarray(direct.logits).argmax(-1) == y))
    clean_accuracy = float(np.mean(np.asarray(trained_compact.logits_fn(x)).argmax(-1) == y))

    def value(label):
        return re.search(rf"^{re.escape(label)}\s*(.+)$", out, re.MULTILINE).group(1).strip()

    assert out.splitlines()[0] == f"{TOY}@{eps * 255:g}/255 on resnet_compact, {n} test images"
    adversarial, success = (float(value(f).split()[0]) for f in ("adversarial accuracy:", "success rate:"))
    assert adversarial == pytest.approx(direct_accuracy, abs=1e-4)  # (the value, before its interval)
    assert adversarial < clean_accuracy  # it attacked something
    assert success == pytest.approx(1 - direct_accuracy, abs=1e-4)
    mean, median = map(float, re.findall(r"[0-9.]+", value("Linf norm (fooled):")))  # the spec's norm
    assert 0 < median <= mean + 1e-4 <= eps + 2e-4


def test_a_registered_toy_fills_a_logit_store(toy_attack, trained_compact, tmp_path):
    eps, n = 8 / 255, 40
    split = data.load("fashion_mnist", "test")
    config = pipeline.AttackConfig(TOY, eps=eps)
    logits = pipeline.ensure_logits(
        trained_compact.backbone,
        config,
        split,
        "test",
        limit=n,
        batch_size=16,
        cache=str(tmp_path),
        progress=False,
    )
    assert TOY in logits.directory.name and len(logits) == n
    adv, labels = np.asarray(logits["adv_logits"]), np.asarray(logits["labels"])
    x, y = split.get_batch(np.arange(n))
    np.testing.assert_array_equal(labels, y)
    direct = jitted_fgsm(trained_compact.logits_fn, x, y, eps)
    np.testing.assert_allclose(adv, np.asarray(direct.logits), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(logits["success"]), adv.argmax(-1) != labels)
    norms = np.asarray(logits["norm"])
    assert np.all(norms <= eps + 1e-6) and np.all(norms > 0)
    clean = np.asarray(logits["clean_logits"])
    assert np.mean(adv.argmax(-1) == labels) < np.mean(clean.argmax(-1) == labels)


def test_a_registered_toy_is_benchmarked_without_a_torch_counterpart(toy_attack, random_compact):
    from jaxlogit.bench import _run

    _, x, y = random_compact
    weights = jax.random.normal(jax.random.key(2), (x[0].size, 10))

    def linear(images):  # a linear model: the toy runs eagerly here
        return images.reshape(len(images), -1) @ weights

    config = bench.BenchConfig(attacks=(TOY,))
    assert _run.torch_images(config, TOY, 8) == 0  # no counterpart: torchattacks is not timed
    res = bench.jax_attack(TOY, linear, x, y)()
    expected = fgsm(linear, x, y, key=None, eps=_attacks.EPS, steps=None)
    np.testing.assert_array_equal(np.asarray(res.x_adv), np.asarray(expected.x_adv))
    assert bench.jax_work(TOY, res, 10) == attacks.Work(2, 1)


def test_an_attack_without_a_work_model_is_refused_by_the_bench():
    attacks.register(attacks.AttackSpec("toy_noop", "l2", False, {}, fgsm))
    try:
        with pytest.raises(JaxlogitError, match="work model") as err:
            bench.BenchConfig(attacks=("toy_noop",))
        assert_one_line(str(err.value), "toy_noop")
    finally:
        attacks.unregister("toy_noop")
