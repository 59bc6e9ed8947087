"""The flax backbones reproduce torchvision's logits from imported weights; bad weights fail."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import models
from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _layers

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")


def _randomise_batch_norm(model, generator) -> None:
    """Non-trivial running stats and affine weights, so eval-mode BN is really exercised."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                n = layer.num_features
                layer.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                layer.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                layer.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.5)
                layer.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _torchvision_model(name: str):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    _randomise_batch_norm(model, torch.Generator().manual_seed(1))
    return model.eval()


@pytest.fixture(scope="module")
def resnet50():
    return _torchvision_model("resnet50")


@pytest.fixture(scope="module")
def densenet121():
    return _torchvision_model("densenet121")


def _assert_same_logits(name: str, model, size: int) -> None:
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(images).numpy()
    variables = models.from_torchvision(name, model.state_dict())
    apply = jax.jit(models.create(name).apply)
    got = np.asarray(apply(variables, jnp.asarray(images.numpy().transpose(0, 2, 3, 1))))
    assert got.shape == expected.shape == (2, 1000)
    error = np.abs(got - expected).max()
    assert error <= 1e-4
    assert error <= 1e-5 * np.abs(expected).max()  # relative too: VGG's logits are small


# 64x64 gives VGG a 2x2 map that AdaptiveAvgPool2d((7, 7)) spreads over overlapping windows.
@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param("vgg16", marks=pytest.mark.extended), "vgg16_bn"])
def test_vgg_logits_match_torchvision(name):
    _assert_same_logits(name, _torchvision_model(name), size=64)


@pytest.mark.slow
def test_resnet50_logits_match_torchvision(resnet50):
    _assert_same_logits("resnet50", resnet50, size=32)


@pytest.mark.slow
def test_densenet121_logits_match_torchvision(densenet121):
    _assert_same_logits("densenet121", densenet121, size=32)


@pytest.mark.parametrize("in_size,out_size", [(2, 7), (5, 3), (10, 4), (7, 7), (9, 1), (3, 5)])
def test_adaptive_avg_pool_matches_torch(in_size, out_size):
    x = np.random.default_rng(0).normal(size=(2, 3, in_size, in_size + 1)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(x), (out_size, 2))
    got = _layers.adaptive_avg_pool(jnp.asarray(x.transpose(0, 2, 3, 1)), (out_size, 2))
    np.testing.assert_allclose(np.asarray(got), expected.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_legacy_densenet_keys_are_renamed(densenet121):
    state = densenet121.state_dict()
    legacy = {
        key.replace("denselayer1.norm1", "denselayer1.norm.1").replace(
            "denselayer1.conv2", "denselayer1.conv.2"
        ): value
        for key, value in state.items()
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in legacy
    want = models.from_torchvision("densenet121", state)
    got = models.from_torchvision("densenet121", legacy)
    jax.tree.map(np.testing.assert_array_equal, got, want)


def _numpy_state(model) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in model.state_dict().items()}


def test_missing_key_is_listed(resnet50):
    state = _numpy_state(resnet50)
    del state["layer3.2.bn2.running_var"]
    with pytest.raises(JaxlogitError, match=r"1 missing keys: layer3\.2\.bn2\.running_var"):
        models.from_torchvision("resnet50", state)


def test_extra_key_is_listed(resnet50):
    state = _numpy_state(resnet50)
    state["fc2.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(JaxlogitError, match=r"1 unexpected keys: fc2\.weight"):
        models.from_torchvision("resnet50", state)


def test_shape_mismatch_is_listed(resnet50):
    state = _numpy_state(resnet50)
    state["fc.weight"] = np.zeros((10, 2048), np.float32)
    with pytest.raises(JaxlogitError, match=r"fc\.weight \(10, 2048\) != \(1000, 2048\)"):
        models.from_torchvision("resnet50", state)


def test_head_of_another_size_loads_with_num_classes(resnet50):
    state = _numpy_state(resnet50)
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:10], state["fc.bias"][:10]
    variables = models.from_torchvision("resnet50", state, num_classes=10)
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["fc.weight"].T)


def test_weights_of_another_arch_fail(resnet50):
    with pytest.raises(
        JaxlogitError,
        match=r"densenet121: \d+ missing keys: .*unexpected keys"
        r": bn1\.bias, bn1\.running_mean, .*more\)",
    ):
        models.from_torchvision("densenet121", resnet50.state_dict())
