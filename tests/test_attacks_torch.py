"""PGD and MIM against torchattacks on one tiny CNN, defined in Flax and torch, same weights.

torchattacks' MIFGSM divides each gradient by its mean absolute value, ours by its L1 norm
(Dong et al.): the momenta differ by the constant factor n_pixels at every step, so their
signs, and hence the steps, are the same; only float rounding separates the two.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import attacks

torch = pytest.importorskip("torch")  # the optional `torch` extra
torchattacks = pytest.importorskip("torchattacks")

N, SIZE, CLASSES = 64, 16, 10


class FlaxCNN(nn.Module):
    """conv3x3(8, stride 2, pad 1) -> ReLU -> conv3x3(16, stride 2, pad 1) -> ReLU -> dense(10)."""

    @nn.compact
    def __call__(self, x):
        pad = ((1, 1), (1, 1))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, padding=pad, name="conv1")(x))
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, padding=pad, name="conv2")(x))
        return nn.Dense(CLASSES, name="dense")(x.reshape(x.shape[0], -1))


class TorchCNN(torch.nn.Module):
    """The same network for NCHW tensors; flattens in NHWC order like the Flax model."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dense = torch.nn.Linear(16 * (SIZE // 4) ** 2, CLASSES)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.dense(x.permute(0, 2, 3, 1).flatten(1))


def torch_copy(params) -> TorchCNN:
    """A ``TorchCNN`` holding the Flax ``params``."""
    model = TorchCNN().eval()
    with torch.no_grad():
        for name in ("conv1", "conv2"):
            kernel = np.asarray(params[name]["kernel"]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
            getattr(model, name).weight.copy_(torch.tensor(kernel))
            getattr(model, name).bias.copy_(torch.tensor(np.asarray(params[name]["bias"])))
        model.dense.weight.copy_(torch.tensor(np.asarray(params["dense"]["kernel"]).T))
        model.dense.bias.copy_(torch.tensor(np.asarray(params["dense"]["bias"])))
    return model


def structured_images(seed, n) -> np.ndarray:
    """Blocky random images: 4x4 noise upsampled to SIZE x SIZE, plus a little pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(n, 4, 4, 1)).repeat(SIZE // 4, axis=1).repeat(SIZE // 4, axis=2)
    return np.clip(coarse + 0.05 * rng.normal(size=coarse.shape), 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def twin_models():
    """Flax logits_fn, its torch twin, images (NHWC) and the model's own labels."""
    x = structured_images(0, N)
    variables = jax.jit(FlaxCNN().init)(jax.random.key(1), x)
    logits_fn = functools.partial(FlaxCNN().apply, variables)
    model = torch_copy(variables["params"])
    y = jnp.argmax(logits_fn(x), axis=-1).astype(jnp.int32)
    return logits_fn, model, x, y


def to_torch(x) -> torch.Tensor:
    return torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())


def torch_success(model, x_adv_nchw, y) -> np.ndarray:
    with torch.no_grad():
        return model(x_adv_nchw).argmax(1).numpy() != np.asarray(y)


def test_twin_models_agree(twin_models):
    logits_fn, model, x, _ = twin_models
    with torch.no_grad():
        torch_logits = model(to_torch(x)).numpy()
    np.testing.assert_allclose(logits_fn(x), torch_logits, atol=1e-5)


def compare(ours, theirs_nchw, model, y):
    """(same-success fraction, equal-pixel fraction, our success rate)."""
    theirs = theirs_nchw.numpy().transpose(0, 2, 3, 1)
    same_success = np.mean(np.asarray(ours.success) == torch_success(model, theirs_nchw, y))
    equal_pixels = np.mean(np.abs(np.asarray(ours.x_adv) - theirs) <= 1e-5)
    return same_success, equal_pixels, float(ours.success.mean())


# eps=16/255 is the paper's (fools every sample of this random model); 1/255 fools about 30%.
EPSILONS = [16 / 255, 1 / 255]


def check_agreement(same_success, equal_pixels, rate, eps):
    assert same_success >= 0.98
    assert equal_pixels >= 0.95
    assert rate > 0.1 if eps == EPSILONS[0] else 0.1 < rate < 0.9


@pytest.mark.parametrize("eps", EPSILONS)
def test_pgd_matches_torchattacks(twin_models, eps):
    logits_fn, model, x, y = twin_models
    ours = attacks.pgd(logits_fn, x, y, eps=eps, step_size=eps / 8, steps=10, random_start=False)
    theirs = torchattacks.PGD(model, eps=eps, alpha=eps / 8, steps=10, random_start=False)(
        to_torch(x), torch.from_numpy(np.asarray(y, np.int64))
    )
    check_agreement(*compare(ours, theirs, model, y), eps)


@pytest.mark.parametrize("eps", EPSILONS)
def test_mim_matches_torchattacks(twin_models, eps):
    logits_fn, model, x, y = twin_models
    ours = attacks.mim(logits_fn, x, y, eps=eps, steps=10, decay=1.0)
    theirs = torchattacks.MIFGSM(model, eps=eps, alpha=eps / 10, steps=10, decay=1.0)(
        to_torch(x), torch.from_numpy(np.asarray(y, np.int64))
    )
    check_agreement(*compare(ours, theirs, model, y), eps)
