"""Attack geometry: the refactored loops are bitwise the old ones; the L2 pieces keep their promises.

The bitwise checks run today's ``pgd``, ``mim``, ``pgd_restarts`` and ``linf_advance`` and the
pre-refactor programs kept verbatim in ``tests/_reference_attacks.py`` on random-init compact
backbones, both compiled through ``jaxlogit._xla.jit``, and compare every output bit for bit.
"""

from __future__ import annotations

import _reference_attacks as reference
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import attacks, models
from jaxlogit.attacks import _geometry, _losses, _norms
from jaxlogit.attacks._compile import split_logits_fn
from jaxlogit.errors import JaxlogitError

BATCH, EPS, STEP = 8, 8 / 255, 2 / 255
L2_EPS = 1.0


@jax.jit
def apply(logits_fn, x):
    """``logits_fn(x)`` compiled, with the weights as inputs."""
    return logits_fn(x)


@jax.jit
def ce_gradient(logits_fn, x, y):
    """Gradient of each sample's cross-entropy w.r.t. its image (B, H, W, C)."""
    return _losses.input_gradient(logits_fn, x, y, _losses.cross_entropy, False)


def compact(name: str):
    """A random-init compact backbone as ``logits_fn``, 8 random images and random labels."""
    spec = models.spec(name)
    module = models.create(name)
    variables = models.init(module, jax.random.key(0), spec.input_shape)
    f = models.logits_fn(module, variables, mean=spec.mean, std=spec.std)
    x = jax.random.uniform(jax.random.key(1), (BATCH, *spec.input_shape))
    y = jax.random.randint(jax.random.key(2), (BATCH,), 0, 10)
    return f, x, y


def assert_bitwise(new, old, what: str) -> None:
    for field in new._fields:
        assert np.array_equal(getattr(new, field), getattr(old, field)), f"{what}: {field} differs"


SLOW = pytest.mark.slow
EXTENDED = pytest.mark.extended  # the attack code is the same on every backbone: one in CI


@pytest.mark.parametrize(
    "name",
    [
        "vgg_compact",
        pytest.param("resnet_compact", marks=[SLOW, EXTENDED]),
        pytest.param("densenet_compact", marks=[SLOW, EXTENDED]),
    ],
)
def test_refactored_attacks_are_bitwise_the_old_ones(name):
    f, x, y = compact(name)
    fn_static, fn_arrays = split_logits_fn(f)

    new = attacks.pgd(f, x, y, key=jax.random.key(3), eps=EPS, steps=3, step_size=STEP)
    old = reference.pgd_program(
        fn_arrays,
        x,
        y,
        jax.random.key(3),
        jnp.float32(EPS),
        jnp.float32(STEP),
        fn_static=fn_static,
        steps=3,
        random_start=True,
        loss=_losses.cross_entropy,
        targeted=False,
    )
    assert_bitwise(new, old, "pgd")

    new = attacks.mim(f, x, y, eps=EPS, steps=3)
    old = reference.mim_program(
        fn_arrays,
        x,
        y,
        jnp.float32(EPS),
        jnp.float32(EPS / 3),
        jnp.float32(1.0),
        fn_static=fn_static,
        steps=3,
        loss=_losses.cross_entropy,
        targeted=False,
    )
    assert_bitwise(new, old, "mim")

    objective = attacks.loss_objective(f, "ce")
    obj_static, obj_arrays = split_logits_fn(objective)
    keys = attacks.sample_keys(jax.random.key(4), jnp.arange(BATCH))
    new = attacks.pgd_restarts(f, x, y, key=jax.random.key(4), eps=EPS, steps=2, restarts=2)
    old = reference._restarts_program(
        obj_arrays,
        x,
        y,
        keys,
        jnp.float32(EPS),
        jnp.float32(EPS / 8),
        jnp.int32(2),
        jnp.int32(2),
        obj_static=obj_static,
    )
    for field in ("x_adv", "logits", "success"):
        assert np.array_equal(getattr(new, field), getattr(old, field)), f"pgd_restarts: {field} differs"

    start = attacks.linf_random_starts(keys, x, EPS)
    assert np.array_equal(start, reference.linf_random_starts(keys, x, EPS)), "linf_random_starts differs"
    tracked = attacks.track_init(x, 10)
    new = attacks.linf_advance(
        objective, x, y, start, tracked, eps=EPS, step_size=STEP, steps=2, steps_spent=1
    )
    old = reference._advance_program(
        obj_arrays,
        x,
        y,
        start,
        tracked,
        jnp.float32(EPS),
        jnp.float32(STEP),
        jnp.int32(1),
        jnp.int32(2),
        obj_static=obj_static,
    )
    assert np.array_equal(new[0], old[0]), "linf_advance: last iterate differs"
    assert_bitwise(new[1], old[1], "linf_advance")


def images(key, batch=4, side=6):
    return jax.random.uniform(key, (batch, side, side, 1))


def test_l2_projection_lands_in_ball_and_box_and_keeps_points_inside():
    x = images(jax.random.key(0))
    far = x + 3.0 * jax.random.normal(jax.random.key(1), x.shape)
    projected = _norms.l2_project(far, x, 0.5)
    assert np.all(_norms.l2_norm(projected - x) <= 0.5 * (1 + 1e-6))
    assert np.all((projected >= 0.0) & (projected <= 1.0))
    near = _norms.clip_box(x + 0.01 * jax.random.normal(jax.random.key(2), x.shape))
    assert np.all(_norms.l2_norm(near - x) < 0.5)
    assert np.array_equal(_norms.l2_project(near, x, 0.5), near)


def test_l2_projection_scales_delta_onto_the_sphere():
    x = jnp.full((3, 6, 6, 1), 0.5)
    delta = 0.3 * jax.random.normal(jax.random.key(0), x.shape)  # |delta| well above 0.1, box not reached
    projected = _norms.l2_project(x + delta, x, 0.1)
    np.testing.assert_allclose(_norms.l2_norm(projected - x), 0.1, rtol=1e-5)
    scale = 0.1 / _norms.l2_norm(delta)
    np.testing.assert_allclose(projected - x, delta * scale[:, None, None, None], atol=1e-6)


def test_l2_random_start_is_in_ball_and_box_and_depends_on_the_key():
    x = images(jax.random.key(0))
    first = _norms.l2_random_start(jax.random.key(1), x, 0.5)
    second = _norms.l2_random_start(jax.random.key(2), x, 0.5)
    for start in (first, second):
        norms = _norms.l2_norm(start - x)
        assert np.all(norms <= 0.5 * (1 + 1e-6)) and np.all(norms > 0.0)
        assert np.all((start >= 0.0) & (start <= 1.0))
    assert not np.any(np.all(np.asarray(first == second).reshape(4, -1), axis=1)), "same start for two keys"


@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30])
def test_l2_step_has_norm_step_size_along_the_gradient(scale):
    x_adv = images(jax.random.key(0))
    grad = scale * jax.random.normal(jax.random.key(1), x_adv.shape)
    moved = _norms.l2_step(x_adv, grad, 0.25) - x_adv
    np.testing.assert_allclose(_norms.l2_norm(moved), 0.25, rtol=1e-5)
    cosine = jnp.sum(_norms.flat(moved) * _norms.flat(grad / scale), axis=1) / (
        _norms.l2_norm(moved) * _norms.l2_norm(grad / scale)
    )
    np.testing.assert_allclose(cosine, 1.0, rtol=1e-5)


def test_l2_step_with_zero_gradient_does_not_move():
    x_adv = images(jax.random.key(0))
    grad = jax.random.normal(jax.random.key(1), x_adv.shape).at[1].set(0.0)
    moved = _norms.l2_step(x_adv, grad, 0.25)
    assert np.array_equal(moved[1], x_adv[1])
    assert not np.array_equal(moved[0], x_adv[0])


@pytest.fixture(scope="module")
def vgg():
    """The compact backbone that compiles fastest."""
    return compact("vgg_compact")


@pytest.mark.parametrize("attack", ["pgd", "mim", "pgd_restarts"])
def test_l2_attacks_stay_in_the_ball_and_report_their_success(vgg, attack):
    f, x, y = vgg
    if attack == "pgd":
        res = attacks.pgd(
            f, x, y, key=jax.random.key(5), eps=L2_EPS, steps=3, step_size=L2_EPS / 2, norm="l2"
        )
    elif attack == "mim":
        res = attacks.mim(f, x, y, eps=L2_EPS, steps=3, norm="l2")
    else:
        res = attacks.pgd_restarts(f, x, y, key=jax.random.key(5), eps=L2_EPS, steps=2, restarts=2, norm="l2")
    l2 = _norms.l2_norm(res.x_adv - x)
    assert np.all(l2 <= L2_EPS + 1e-6)
    np.testing.assert_allclose(res.norm, l2, rtol=1e-6)
    assert np.all((res.x_adv >= 0.0) & (res.x_adv <= 1.0))
    assert np.array_equal(res.success, np.argmax(res.logits, -1) != y)
    np.testing.assert_allclose(res.logits, apply(f, res.x_adv), rtol=1e-4, atol=1e-4)
    loss_before = _losses.cross_entropy(apply(f, x), y)
    loss_after = _losses.cross_entropy(res.logits, y)
    assert np.mean(loss_after) > np.mean(loss_before), "the attack must raise the loss"


def test_l2_pgd_step_is_the_normalised_gradient(vgg):
    f, x, y = vgg
    res = attacks.pgd(f, x, y, eps=10.0, steps=1, step_size=0.5, random_start=False, norm="l2")
    grad = ce_gradient(f, x, y)
    expected = _norms.clip_box(x + 0.5 * grad / _norms.l2_norm(grad)[:, None, None, None])
    np.testing.assert_allclose(res.x_adv, expected, atol=1e-5)
    assert np.all(res.norm > 0.25), "the box clipped most of the step: the comparison says little"


def tiny_logits(weights, x):
    """A small non-linear model, (B, 6, 6, 1) -> (B, 3), quick to compile."""
    w, v = weights
    return jnp.tanh(x.reshape(x.shape[0], -1) @ w) @ v


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_mim_without_momentum_is_pgd_from_the_clean_image(norm):
    # decay 0: the direction is grad / ||grad||_1, which points where grad does.
    keys = jax.random.split(jax.random.key(0), 3)
    weights = (jax.random.normal(keys[0], (36, 16)), jax.random.normal(keys[1], (16, 3)))
    f = jax.tree_util.Partial(tiny_logits, weights)
    x, y = images(keys[2], batch=8), jnp.arange(8, dtype=jnp.int32) % 3
    eps, step_size = (0.1, 0.03) if norm == "linf" else (0.5, 0.2)
    mim = attacks.mim(f, x, y, eps=eps, steps=4, step_size=step_size, decay=0.0, norm=norm)
    pgd = attacks.pgd(f, x, y, eps=eps, steps=4, step_size=step_size, random_start=False, norm=norm)
    np.testing.assert_allclose(mim.x_adv, pgd.x_adv, atol=1e-6)
    assert np.all(mim.norm > 0.0)
    with_momentum = attacks.mim(f, x, y, eps=eps, steps=4, step_size=step_size, decay=1.0, norm=norm)
    assert not np.array_equal(with_momentum.x_adv, mim.x_adv), "the momentum must change the path"


def test_geometries_cover_both_norms_and_unknown_norms_fail():
    assert set(_geometry.GEOMETRIES) == {"linf", "l2"}
    for name, geometry in _geometry.GEOMETRIES.items():
        assert geometry.name == name and geometry.norm is _norms.NORMS[name]
    x, y = images(jax.random.key(0)), jnp.zeros((4,), jnp.int32)
    with pytest.raises(JaxlogitError, match="norm='l1'"):
        attacks.pgd(lambda v: v.reshape(4, -1)[:, :3], x, y, key=jax.random.key(0), norm="l1")
    with pytest.raises(JaxlogitError, match="norm='L2'"):
        attacks.mim(lambda v: v.reshape(4, -1)[:, :3], x, y, norm="L2")
