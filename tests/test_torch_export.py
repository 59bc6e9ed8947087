"""``models.to_torch``: the torch export of a flax backbone computes the same logits.

The compact backbones get random weights and randomised BatchNorm statistics (so eval-mode BN
really matters), drawn in numpy from the variables' shapes without running flax's init.
"""

from __future__ import annotations

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import models
from jaxlogit.errors import JaxlogitError

torch = pytest.importorskip("torch")  # the optional `torch` extra
pytest.importorskip("torchvision")

COMPACT = ["vgg_compact", "resnet_compact", "densenet_compact"]


def random_variables(name: str, seed: int) -> dict:
    """Variables of ``name`` with He-scaled random kernels and non-trivial BN statistics."""
    shape = models.spec(name).input_shape
    dummy = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    shapes = jax.eval_shape(lambda x: models.create(name).init(jax.random.key(0), x), dummy)
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in flax.traverse_util.flatten_dict(dict(shapes)).items():
        size = leaf.shape
        if path[-1] == "kernel":
            fan_in = int(np.prod(size[:-1]))
            value = rng.normal(size=size) * np.sqrt(2.0 / fan_in)
        elif path[-1] == "scale":
            value = rng.uniform(0.5, 1.5, size)
        elif path[-1] == "var":
            value = rng.uniform(0.5, 2.0, size)
        else:  # bias, running mean
            value = rng.normal(size=size) * 0.2
        flat[path] = jnp.asarray(value, jnp.float32)
    return flax.traverse_util.unflatten_dict(flat)


def flax_logits(name: str, variables: dict, x: np.ndarray) -> np.ndarray:
    spec = models.spec(name)
    f = models.logits_fn(models.create(name), variables, mean=spec.mean, std=spec.std)
    return np.asarray(jax.jit(f)(x))


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()


def images(name: str, n: int, seed: int) -> np.ndarray:
    shape = models.spec(name).input_shape
    return np.random.default_rng(seed).uniform(size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", COMPACT)
def test_compact_export_gives_flax_logits(name):
    variables = random_variables(name, seed=1)
    x = images(name, 8, seed=2)
    model = models.to_torch(name, variables)
    expected = flax_logits(name, variables, x)
    got = torch_logits(model, x)
    assert not model.training
    assert got.shape == expected.shape == (8, 10)
    assert np.abs(got - expected).max() <= 1e-4
    assert np.abs(expected).max() > 1e-2  # logits are not trivially ~0 (a vacuous check)
    # Different images give different logits, so the match is not a constant-output accident.
    assert np.abs(expected[0] - expected[1]).max() > 1e-3


@pytest.mark.parametrize("name", COMPACT)
def test_export_then_import_round_trips(name):
    variables = random_variables(name, seed=3)
    model = models.to_torch(name, variables)
    backbone_state = {
        key.removeprefix("backbone."): value
        for key, value in model.state_dict().items()
        if key.startswith("backbone.")
    }
    back = models.from_torchvision(name, backbone_state)
    for path, value in flax.traverse_util.flatten_dict(variables).items():
        np.testing.assert_array_equal(np.asarray(_get(back, path)), np.asarray(value))


def _get(tree: dict, path: tuple[str, ...]):
    for part in path:
        tree = tree[part]
    return tree


def test_normalisation_is_inside_the_torch_module():
    name = "resnet_compact"
    model = models.to_torch(name, random_variables(name, seed=4))
    x = images(name, 2, seed=5)
    spec = models.spec(name)
    normalised = (torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) - spec.mean[0]) / spec.std[0]
    with torch.no_grad():
        np.testing.assert_allclose(model.backbone(normalised).numpy(), torch_logits(model, x), atol=1e-6)


def test_variables_of_another_architecture_raise():
    with pytest.raises(JaxlogitError, match="do not fit vgg_compact"):
        models.to_torch("vgg_compact", random_variables("resnet_compact", seed=6))
