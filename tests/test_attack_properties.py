"""Property tests (hypothesis) of the attacks' contract on a tiny random model.

For random batches, budgets and labels: ``x_adv`` stays in [0, 1], PGD and MIM stay in the
L-inf ball, ``success == (argmax(logits) != y)`` and ``logits == logits_fn(x_adv)``. Shapes come
from a small fixed set, so each attack compiles at most twice however many examples run.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxlogit import attacks

SIZE, CLASSES = 6, 5
BATCHES = (3, 4)
PROPERTY_SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TinyModel(nn.Module):
    """Conv(4) -> tanh -> Dense(5) on 6x6x1 images: non-linear, cheap to compile."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3))(x))
        return nn.Dense(CLASSES)(x.reshape(x.shape[0], -1))


@functools.lru_cache(maxsize=1)
def tiny_logits_fn():
    variables = TinyModel().init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 1)))
    return jax.tree_util.Partial(lambda v, x: TinyModel().apply(v, x), variables)


@st.composite
def problems(draw):
    """(x (B, 6, 6, 1) in [0, 1], y (B,) in [0, C), eps in (0, 0.5], seed)."""
    batch = draw(st.sampled_from(BATCHES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (batch, SIZE, SIZE, 1)).astype(np.float32)
    saturated = draw(st.sampled_from([None, 0.0, 1.0]))  # pixels on the box boundary
    if saturated is not None:
        x[:, : SIZE // 2] = saturated
    y = np.asarray(draw(st.lists(st.integers(0, CLASSES - 1), min_size=batch, max_size=batch)), np.int32)
    eps = draw(st.floats(1e-3, 0.5, allow_nan=False))
    return x, y, eps, seed


def run(name, x, y, eps, seed):
    f = tiny_logits_fn()
    if name == "pgd":
        return attacks.pgd(f, x, y, key=jax.random.key(seed), eps=eps, step_size=eps / 4, steps=5)
    if name == "mim":
        return attacks.mim(f, x, y, eps=eps, steps=5)
    if name == "deepfool":
        return attacks.deepfool(f, x, y, candidates=3, max_iter=5)
    return attacks.cw_l2(f, x, y, steps=3, search_steps=2)


@pytest.mark.parametrize("name", ["pgd", "mim", "deepfool", "cw"])
@PROPERTY_SETTINGS
@given(problem=problems())
def test_attack_contract_holds_for_random_inputs(name, problem):
    x, y, eps, seed = problem
    res = jax.device_get(run(name, x, y, eps, seed))
    x_adv = np.asarray(res.x_adv)
    assert x_adv.shape == x.shape and np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    if name in ("pgd", "mim"):
        assert np.abs(x_adv - x).max() <= eps + 1e-6
        np.testing.assert_allclose(res.norm, np.abs(x_adv - x).reshape(len(x), -1).max(axis=1), atol=1e-6)
    np.testing.assert_array_equal(res.success, np.argmax(res.logits, -1) != y)
    np.testing.assert_allclose(res.logits, np.asarray(tiny_logits_fn()(x_adv)), rtol=1e-5, atol=1e-5)
