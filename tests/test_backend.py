"""jaxlogit.backend: the XLA:CPU and plain convolution paths agree, the switch reaches the
compiled attack, selection by argument / $JAXLOGIT_CONV / backend, and opt-in bfloat16.

Tolerances (float32, the two paths differ only by rounding): logits rtol 1e-4, atol 1e-5 x the
largest logit; input gradients rtol 1e-4, atol 1e-5 x the largest gradient entry.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import _xla, attacks, backend, bench, models, pipeline
from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _densenet, _registry, _resnet, _vgg

COMPACT = ("vgg_compact", "resnet_compact", "densenet_compact")
# The ImageNet architectures' whole convolution and pooling stacks (7x7/2 stems, 3x3/2
# max-pools, strided shortcuts, transitions) with a small head, at a small input.
IMAGENET = {
    "vgg16": (lambda **layers: _vgg.vgg16(hidden=32, num_classes=10, **layers), (32, 32, 3)),
    # ResNet-50's stem, bottlenecks (with their projections) and four stages at one block each
    # (all 16 blocks compile for a minute on two CPU cores and test nothing more).
    "resnet50": (
        lambda **layers: _resnet.resnet50(num_classes=10, stage_sizes=(1, 1, 1, 1), **layers),
        (64, 64, 3),
    ),
    # DenseNet-121's stem, dense layers and transitions at depth 2-2-2-2 (all 58 layers
    # compile for minutes on two CPU cores and test nothing more).
    "densenet121": (
        lambda **layers: _densenet.densenet121(num_classes=10, block_config=(2, 2, 2, 2), **layers),
        (64, 64, 3),
    ),
}


def both_paths(factory) -> dict:
    """The same architecture built for each path: ``{"cpu": module, "plain": module}``."""
    return {
        path: factory(**dict(zip(("conv", "max_pool"), backend.conv_layers(path))))
        for path in backend.CONV_PATHS
    }


def logits_and_input_grad(module, variables, x) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode logits (B, C) and the input gradient (B, H, W, C) of ``sum(logits * w)``."""

    def scalar(images):
        logits = module.apply(variables, images, train=False)
        weights = jnp.linspace(-1.0, 1.0, logits.size).reshape(logits.shape)
        return jnp.sum(logits * weights), logits

    grad, logits = jax.jit(jax.grad(scalar, has_aux=True))(x)
    return np.asarray(logits), np.asarray(grad)


def assert_paths_agree(modules: dict, input_shape) -> None:
    variables = models.init(modules["cpu"], jax.random.key(0), input_shape)
    x = jax.random.normal(jax.random.key(1), (2, *input_shape))
    (cpu_logits, cpu_grad), (plain_logits, plain_grad) = [
        logits_and_input_grad(modules[path], variables, x) for path in backend.CONV_PATHS
    ]
    np.testing.assert_allclose(plain_logits, cpu_logits, rtol=1e-4, atol=1e-5 * np.abs(cpu_logits).max())
    np.testing.assert_allclose(plain_grad, cpu_grad, rtol=1e-4, atol=1e-5 * np.abs(cpu_grad).max())
    assert np.abs(cpu_grad).max() > 0


@pytest.mark.parametrize("name", COMPACT)
def test_paths_agree_on_compact_backbones(name):
    modules = {path: models.create(name, conv=path) for path in backend.CONV_PATHS}
    assert_paths_agree(modules, models.spec(name).input_shape)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.extended) if n == "vgg16" else n for n in sorted(IMAGENET)]
)  # VGG's layers are those of the compact VGG, tested above
def test_paths_agree_on_imagenet_architectures(name):
    factory, input_shape = IMAGENET[name]
    assert_paths_agree(both_paths(factory), input_shape)


@pytest.mark.parametrize("name", [*COMPACT, "resnet50"])
def test_both_paths_have_the_same_variables(name):
    shape = models.spec(name).input_shape
    trees = [
        jax.tree.map(
            lambda leaf: (leaf.shape, leaf.dtype),
            _registry.variable_shapes(models.create(name, conv=path), shape),
        )
        for path in backend.CONV_PATHS
    ]
    assert trees[0] == trees[1]


def test_both_paths_initialise_the_same_values():
    name = "resnet_compact"
    cpu, plain = [
        models.init(models.create(name, conv=path), jax.random.key(0), models.spec(name).input_shape)
        for path in backend.CONV_PATHS
    ]
    jax.tree.map(np.testing.assert_array_equal, cpu, plain)


def pgd_text(module) -> str:
    """The lowered (StableHLO) text of a 2-step PGD on ``module`` (random weights)."""
    shape = models.spec("resnet_tiny").input_shape
    variables = models.init(module, jax.random.key(0), shape)
    f = models.logits_fn(module, variables, mean=(0.5,), std=(0.25,))
    x, y = jnp.zeros((2, *shape)), jnp.zeros((2,), jnp.int32)
    program = jax.jit(lambda f, x, y: attacks.pgd(f, x, y, key=jax.random.key(0), steps=2).x_adv)
    return program.lower(f, x, y).as_text()


def test_only_the_cpu_path_puts_barriers_in_the_attack():
    assert "optimization_barrier" in pgd_text(models.create("resnet_tiny", conv="cpu"))
    assert "optimization_barrier" not in pgd_text(models.create("resnet_tiny", conv="plain"))


def test_environment_variable_reaches_a_default_module(monkeypatch):
    monkeypatch.setenv(backend.ENV_VAR, "plain")
    assert "optimization_barrier" not in pgd_text(models.create("resnet_tiny"))


def test_selection_order(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert backend.conv_path() == "cpu"
    assert backend.deepfool_chunk() == backend.CPU_DEEPFOOL_CHUNK
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert backend.conv_path() == "plain"
    assert backend.deepfool_chunk() is None
    assert backend.conv_layers()[1] is not backend.conv_layers("cpu")[1]
    monkeypatch.setenv(backend.ENV_VAR, "cpu")
    assert backend.conv_path() == "cpu"
    assert backend.conv_path("plain") == "plain"  # the argument beats the variable


@pytest.mark.parametrize("env, arg", [("gpu", None), (None, "fast"), ("PLAIN", None)])
def test_unknown_path_is_a_one_line_error(monkeypatch, env, arg):
    if env is None:
        monkeypatch.delenv(backend.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(backend.ENV_VAR, env)
    with pytest.raises(JaxlogitError, match="unknown convolution path") as info:
        backend.conv_path(arg)
    assert "\n" not in str(info.value)
    assert (backend.ENV_VAR in str(info.value)) == (arg is None)


def test_xla_options_only_on_cpu(monkeypatch):
    """Off CPU, ``_xla.jit`` never hands the options to the compiler (a bogus one would warn)."""
    monkeypatch.setattr(_xla, "CONV_OPTIONS", {"xla_jaxlogit_no_such_option": "1"})
    monkeypatch.setattr(_xla, "_rejected", [])
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(_xla.jit(lambda a: a * 3.0)(jnp.ones(3)), 3.0)
    assert not _xla._rejected


def test_deepfool_chunk_is_a_setting_with_the_same_results():
    name = "resnet_tiny"
    spec = models.spec(name)
    module = models.create(name)
    f = models.logits_fn(
        module, models.init(module, jax.random.key(0), spec.input_shape), mean=spec.mean, std=spec.std
    )
    x = jax.random.uniform(jax.random.key(1), (6, *spec.input_shape))
    y = jnp.argmax(f(x), -1)
    whole = attacks.deepfool(f, x, y, max_iter=3, chunk=6)
    chunked = attacks.deepfool(f, x, y, max_iter=3, chunk=4)
    np.testing.assert_array_equal(whole.iterations, chunked.iterations)
    np.testing.assert_allclose(whole.x_adv, chunked.x_adv, rtol=1e-5, atol=1e-6)
    with pytest.raises(JaxlogitError, match="chunk"):
        attacks.deepfool(f, x, y, chunk=0)


def test_bfloat16_logits_fn_computes_in_bfloat16_and_returns_float32():
    name = "resnet_tiny"
    spec = models.spec(name)
    module = models.create(name)
    variables = models.init(module, jax.random.key(0), spec.input_shape)
    full = models.logits_fn(module, variables, mean=spec.mean, std=spec.std)
    half = models.logits_fn(module, variables, mean=spec.mean, std=spec.std, compute_dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(half)} == {jnp.dtype(jnp.bfloat16)}
    x = jax.random.uniform(jax.random.key(1), (4, *spec.input_shape))
    full_logits, half_logits, grad = jax.jit(
        lambda full, half, x: (full(x), half(x), jax.grad(lambda a: half(a).sum())(x))
    )(full, half, x)
    assert half_logits.dtype == grad.dtype == jnp.float32
    np.testing.assert_allclose(half_logits, full_logits, atol=0.05 * np.abs(full_logits).max())
    assert not np.array_equal(half_logits, full_logits)
    same = models.logits_fn(module, variables, mean=spec.mean, std=spec.std, compute_dtype="float32")
    assert same.func == full.func  # float32 is the default path, one compilation
    with pytest.raises(JaxlogitError, match="compute_dtype"):
        models.logits_fn(module, variables, mean=spec.mean, std=spec.std, compute_dtype="int8")


def test_bench_config_rejects_an_unknown_precision():
    with pytest.raises(JaxlogitError, match="precision"):
        bench.BenchConfig(precision="fp8")


@pytest.mark.slow
def test_bfloat16_pgd_succeeds_where_float32_does(trained_compact):
    """The paper's PGD (16/255, 10 steps) on 256 test images: per-sample success agrees on
    >= 98% of them between float32 and bfloat16 backbone compute."""
    config = pipeline.AttackConfig("pgd")
    x, y = jnp.asarray(trained_compact.x), jnp.asarray(trained_compact.y)
    success = {}
    for dtype in (None, jnp.bfloat16):
        f = trained_compact.backbone.logits_fn(compute_dtype=dtype)
        res = jax.jit(lambda f, x, y: pipeline.run_attack(config, f, x, y, key=jax.random.key(0)))(f, x, y)
        assert float(jnp.max(jnp.abs(res.x_adv - x))) <= config.eps + 1e-6
        success[dtype] = np.asarray(res.success)
    assert np.mean(success[None] == success[jnp.bfloat16]) >= 0.98
    assert success[None].mean() > 0.5
