"""Attacks on a tiny Flax CNN: invariants, jitted = eager reference, no recompiles, C&W logic."""

from __future__ import annotations

import collections
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import attacks
from jaxlogit.attacks import _cw, _deepfool
from jaxlogit.attacks._compile import split_logits_fn
from jaxlogit.errors import JaxlogitError

BATCH, SIZE, CLASSES = 16, 8, 10
SMALL_EPS = 2 / 255  # leaves a mix of fooled and not fooled samples on the tiny model
TRACES = collections.Counter()


class TinyCNN(nn.Module):
    """Conv(8) -> ReLU -> Dense(10) on 8x8x1 images; enough for non-linear decision regions."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        return nn.Dense(CLASSES)(x.reshape(x.shape[0], SIZE * SIZE * 8))  # also for B = 0


def tiny_apply(variables, x):
    """The logits function under test; counts how often JAX traces it."""
    TRACES["tiny"] += 1
    return TinyCNN().apply(variables, x)


@pytest.fixture(scope="module")
def problem():
    """Tiny model (as a partial over its variables), 16 images and their predicted labels."""
    x = jax.random.uniform(jax.random.key(1), (BATCH, SIZE, SIZE, 1))
    variables = jax.jit(TinyCNN().init)(jax.random.key(0), x)
    logits_fn = functools.partial(tiny_apply, variables)
    y = jnp.argmax(logits_fn(x), axis=-1).astype(jnp.int32)
    y = y.at[0].set((y[0] + 1) % CLASSES)  # one sample misclassified from the start
    return logits_fn, x, y, variables


def run(name, logits_fn, x, y, **kw):
    """Each attack with settings that keep the tiny tests fast and non-trivial."""
    if name == "pgd":
        return attacks.pgd(
            logits_fn, x, y, key=jax.random.key(3), eps=SMALL_EPS, step_size=SMALL_EPS / 4, **kw
        )
    if name == "mim":
        return attacks.mim(logits_fn, x, y, eps=SMALL_EPS, **kw)
    if name == "deepfool":
        return attacks.deepfool(logits_fn, x, y, candidates=4, **kw)
    return attacks.cw_l2(logits_fn, x, y, steps=10, search_steps=3, lr=0.05, **kw)


ALL = ["pgd", "mim", "deepfool", "cw"]


@pytest.fixture(scope="module")
def results(problem):
    logits_fn, x, y, _ = problem
    return {name: run(name, logits_fn, x, y) for name in ALL}


# ---------------------------------------------------------------- invariants


@pytest.mark.parametrize("name", ["pgd", "mim"])
def test_linf_attacks_stay_in_eps_ball_and_box(problem, results, name):
    _, x, _, _ = problem
    res = results[name]
    delta = np.abs(np.asarray(res.x_adv - x)).reshape(BATCH, -1).max(axis=1)
    assert delta.max() <= SMALL_EPS + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    np.testing.assert_allclose(res.norm, delta, atol=1e-7)
    assert np.all(np.asarray(res.iterations) == 10)


@pytest.mark.parametrize("name", ["deepfool", "cw"])
def test_l2_attacks_stay_in_box_and_report_l2(problem, results, name):
    _, x, _, _ = problem
    res = results[name]
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    l2 = np.linalg.norm(np.asarray(res.x_adv - x).reshape(BATCH, -1), axis=1)
    np.testing.assert_allclose(res.norm, l2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_success_is_exactly_reprediction(problem, results, name):
    logits_fn, x, y, _ = problem
    res = results[name]
    logits = logits_fn(res.x_adv)
    np.testing.assert_allclose(res.logits, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(res.success, np.argmax(logits, -1) != np.asarray(y))
    assert bool(res.success[0])  # misclassified from the start counts as fooled


@pytest.mark.parametrize("name", ALL)
def test_attack_inside_jit_on_closed_over_arrays_equals_eager(problem, results, name):
    """Images and labels captured by a user's jit are concrete but jnp ops on them are traced:
    the input checks must read them with numpy (this raised ConcretizationTypeError)."""
    logits_fn, x, y, _ = problem
    jitted = jax.jit(lambda: run(name, logits_fn, x, y).x_adv)()
    np.testing.assert_allclose(jitted, results[name].x_adv, atol=1e-5)


def test_input_checks_still_run_on_closed_over_arrays(problem):
    logits_fn, x, y, _ = problem
    x_255, y_negative = x * 255.0, y - 100
    with pytest.raises(JaxlogitError, match="values in"):
        jax.jit(lambda: attacks.mim(logits_fn, x_255, y).x_adv)()
    with pytest.raises(JaxlogitError, match="negative labels"):
        jax.jit(lambda: attacks.mim(logits_fn, x, y_negative).x_adv)()


def test_small_eps_linf_attacks_leave_a_mix(results):
    """Guards the tests above against a degenerate all-fooled or none-fooled batch."""
    for name in ("pgd", "mim"):
        rate = float(results[name].success.mean())
        assert 0.1 < rate < 0.9, (name, rate)


def test_l2_attacks_fool_every_sample_of_the_tiny_model(results):
    assert bool(results["deepfool"].success.all())
    assert bool(results["cw"].success.all())


def test_pgd_same_key_same_result_other_key_other_start(problem):
    logits_fn, x, y, _ = problem
    kw = dict(eps=SMALL_EPS, step_size=SMALL_EPS / 4)
    a = attacks.pgd(logits_fn, x, y, key=jax.random.key(5), **kw)
    b = attacks.pgd(logits_fn, x, y, key=jax.random.key(5), **kw)
    c = attacks.pgd(logits_fn, x, y, key=jax.random.key(6), **kw)
    for field_a, field_b in zip(a, b):
        np.testing.assert_array_equal(field_a, field_b)
    assert float(jnp.abs(a.x_adv - c.x_adv).max()) > SMALL_EPS / 2


def test_pgd_without_random_start_needs_no_key_and_is_deterministic(problem):
    logits_fn, x, y, _ = problem
    a = attacks.pgd(logits_fn, x, y, random_start=False, eps=SMALL_EPS, step_size=SMALL_EPS / 4)
    b = eager_pgd(logits_fn, x, y, x, SMALL_EPS, SMALL_EPS / 4, 10)
    assert pixels_equal_fraction(a.x_adv, b) >= 0.99


# ---------------------------------------------------------------- jitted = eager reference


def eager_cross_entropy_sum(logits_fn, x, y):
    return -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(logits_fn(x)), y[:, None], axis=1))


def eager_pgd(logits_fn, x, y, start, eps, step_size, steps):
    """The paper's PGD as a plain Python loop."""
    x_adv = start
    for _ in range(steps):
        grad = jax.grad(lambda z: eager_cross_entropy_sum(logits_fn, z, y))(x_adv)
        x_adv = x_adv + step_size * jnp.sign(grad)
        x_adv = jnp.clip(x + jnp.clip(x_adv - x, -eps, eps), 0.0, 1.0)
    return x_adv


def eager_mim(logits_fn, x, y, eps, steps, decay):
    """Dong et al.'s MI-FGSM as a plain Python loop (L1 normalisation per sample)."""
    x_adv, momentum = x, jnp.zeros_like(x)
    for _ in range(steps):
        grad = jax.grad(lambda z: eager_cross_entropy_sum(logits_fn, z, y))(x_adv)
        l1 = jnp.sum(jnp.abs(grad), axis=(1, 2, 3), keepdims=True)
        momentum = decay * momentum + grad / l1
        x_adv = x_adv + (eps / steps) * jnp.sign(momentum)
        x_adv = jnp.clip(x + jnp.clip(x_adv - x, -eps, eps), 0.0, 1.0)
    return x_adv


def eager_deepfool_one(logits_fn, image, label, candidates, max_iter, overshoot):
    """The original per-image DeepFool loop over the clean image's top candidates."""
    logits = logits_fn(image[None])[0]
    order = jnp.argsort(-logits)[:candidates]
    if int(order[0]) != int(label):
        return image, 0
    r_total = jnp.zeros_like(image)
    x_adv, steps = image, 0
    while int(jnp.argmax(logits_fn(x_adv[None])[0])) == int(label) and steps < max_iter:
        z = logits_fn(x_adv[None])[0]
        grads = jax.jacrev(lambda v: logits_fn(v[None])[0])(x_adv)  # (C, H, W, 1)
        best = None
        for k in range(1, candidates):
            w = grads[order[k]] - grads[order[0]]
            distance = float(jnp.abs(z[order[k]] - z[order[0]]) / jnp.linalg.norm(w))
            if best is None or distance < best[0]:
                best = (distance, w)
        distance, w = best
        r_total = r_total + (distance + 1e-4) * w / jnp.linalg.norm(w)
        x_adv = jnp.clip(image + (1 + overshoot) * r_total, 0.0, 1.0)
        steps += 1
    return x_adv, steps


def pixels_equal_fraction(a, b, atol=1e-5):
    return float(np.mean(np.abs(np.asarray(a) - np.asarray(b)) <= atol))


def test_pgd_matches_eager_reference_from_the_same_start(problem):
    logits_fn, x, y, _ = problem
    key = jax.random.key(3)
    res = attacks.pgd(logits_fn, x, y, key=key, eps=SMALL_EPS, step_size=SMALL_EPS / 4)
    start = jnp.clip(x + SMALL_EPS * jax.random.uniform(key, x.shape, minval=-1.0, maxval=1.0), 0, 1)
    reference = eager_pgd(logits_fn, x, y, start, SMALL_EPS, SMALL_EPS / 4, 10)
    assert pixels_equal_fraction(res.x_adv, reference) >= 0.99
    np.testing.assert_allclose(res.x_adv, reference, atol=2 * SMALL_EPS / 4 + 1e-6)


def test_mim_matches_eager_reference(problem):
    logits_fn, x, y, _ = problem
    res = attacks.mim(logits_fn, x, y, eps=SMALL_EPS, steps=10, decay=1.0)
    reference = eager_mim(logits_fn, x, y, SMALL_EPS, 10, 1.0)
    assert pixels_equal_fraction(res.x_adv, reference) >= 0.99


def test_deepfool_matches_eager_per_image_reference(problem, results):
    logits_fn, x, y, _ = problem
    res = results["deepfool"]
    for b in range(5):
        reference, steps = eager_deepfool_one(logits_fn, x[b], y[b], 4, 100, 0.02)
        assert int(res.iterations[b]) == steps
        np.testing.assert_allclose(res.x_adv[b], reference, atol=1e-4)
    assert int(res.iterations[0]) == 0 and float(res.norm[0]) == 0.0  # misclassified: unchanged


def test_deepfool_cotangents_select_candidate_gaps_only():
    top = jnp.array([[3, 1, 7], [0, 2, 5]])
    cot = _deepfool.candidate_cotangents(top, 8)
    assert cot.shape == (2, 2, 8)  # (K - 1, B, C): cost grows with K, not with C
    expected = np.zeros((2, 2, 8), np.float32)
    for k in range(2):
        for b in range(2):
            expected[k, b, int(top[b, k + 1])] += 1
            expected[k, b, int(top[b, 0])] -= 1
    np.testing.assert_array_equal(cot, expected)


def test_l2_attacks_find_the_exact_minimum_of_a_linear_classifier():
    """For logits ``x W + b`` the smallest L2 change of the decision is known in closed form."""
    rng = np.random.default_rng(0)
    weights = jnp.asarray(rng.normal(size=(SIZE * SIZE, CLASSES)), jnp.float32)
    logits_fn = functools.partial(linear_apply, weights)
    x = jnp.asarray(0.4 + 0.2 * rng.uniform(size=(8, SIZE, SIZE, 1)), jnp.float32)  # box inactive
    y = jnp.argmax(logits_fn(x), axis=-1).astype(jnp.int32)
    z = logits_fn(x)
    gaps = z - jnp.take_along_axis(z, y[:, None], axis=1)  # (B, C), <= 0
    directions = weights[None, :, :] - weights.T[y][:, :, None]  # (B, pixels, C)
    distance = jnp.abs(gaps) / jnp.linalg.norm(directions, axis=1)
    exact = jnp.min(jnp.where(jax.nn.one_hot(y, CLASSES) > 0, jnp.inf, distance), axis=1)
    fool = attacks.deepfool(logits_fn, x, y, candidates=CLASSES)
    np.testing.assert_allclose(fool.norm, 1.02 * (exact + 1e-4), rtol=1e-4)  # one step + overshoot
    np.testing.assert_array_equal(fool.iterations, 1)
    cw = attacks.cw_l2(logits_fn, x, y, steps=100, search_steps=6, initial_const=1.0)
    assert bool(cw.success.all())
    np.testing.assert_allclose(cw.norm, exact, rtol=0.02)
    assert bool(jnp.all(cw.norm >= exact * (1 - 1e-4)))  # nothing can beat the minimum


def linear_apply(weights, x):
    return x.reshape(x.shape[0], -1) @ weights


def test_deepfool_stops_at_max_iter(problem):
    logits_fn, x, y, _ = problem
    res = attacks.deepfool(logits_fn, x, y, candidates=4, max_iter=1, overshoot=0.0)
    assert int(res.iterations.max()) == 1
    assert int(res.iterations[0]) == 0


# ---------------------------------------------------------------- compilation


@pytest.mark.parametrize("name", ALL)
def test_second_call_with_new_weights_does_not_recompile(problem, name):
    logits_fn, x, y, variables = problem
    run(name, logits_fn, x, y)  # compiled (or already cached)
    before = TRACES["tiny"]
    new_variables = jax.tree.map(lambda v: v * 1.01, variables)
    fresh_fn = functools.partial(tiny_apply, new_variables)  # a new partial, new weight values
    res = run(name, fresh_fn, x * 0.99, y)
    assert TRACES["tiny"] == before
    np.testing.assert_allclose(res.logits, fresh_fn(res.x_adv), rtol=1e-5, atol=1e-5)  # new weights used


def test_traced_settings_do_not_recompile_but_shapes_do(problem):
    logits_fn, x, y, _ = problem
    attacks.pgd(logits_fn, x, y, key=jax.random.key(0), eps=SMALL_EPS, step_size=SMALL_EPS / 4)
    before = TRACES["tiny"]
    attacks.pgd(logits_fn, x, y, key=jax.random.key(1), eps=3 / 255, step_size=1 / 255)
    assert TRACES["tiny"] == before
    attacks.pgd(logits_fn, x[:4], y[:4], key=jax.random.key(1), eps=3 / 255, step_size=1 / 255)
    assert TRACES["tiny"] > before


def test_split_logits_fn_traces_arrays_and_keeps_settings_static():
    def apply(weights, x, *, scale):
        return x * weights["w"] * scale

    fn = functools.partial(apply, {"w": jnp.ones(3)}, scale=2.0)
    static, arrays = split_logits_fn(fn)
    assert len(arrays) == 1 and arrays[0].shape == (3,)
    other_static, _ = split_logits_fn(functools.partial(apply, {"w": jnp.zeros(3)}, scale=2.0))
    assert static == other_static and hash(static) == hash(other_static)
    assert static != split_logits_fn(functools.partial(apply, {"w": jnp.ones(3)}, scale=3.0))[0]
    np.testing.assert_array_equal(static.bind((jnp.full(3, 5.0),))(jnp.ones(3)), jnp.full(3, 10.0))
    tree_partial = jax.tree_util.Partial(apply, {"w": jnp.ones(3)}, scale=2.0)
    assert split_logits_fn(tree_partial)[0] == static


# ---------------------------------------------------------------- targeted


@pytest.mark.parametrize("name", ["pgd", "mim", "cw"])
def test_targeted_attacks_reach_the_target(problem, name):
    logits_fn, x, y, _ = problem
    target = (y + 3) % CLASSES
    if name == "pgd":
        res = attacks.pgd(logits_fn, x, y, key=jax.random.key(0), eps=0.2, step_size=0.05, y_target=target)
    elif name == "mim":
        res = attacks.mim(logits_fn, x, y, eps=0.2, y_target=target)
    else:
        res = attacks.cw_l2(logits_fn, x, y, steps=10, search_steps=3, lr=0.05, y_target=target)
    assert float(res.success.mean()) >= 0.8
    np.testing.assert_array_equal(res.success, np.argmax(res.logits, -1) == np.asarray(target))


# ---------------------------------------------------------------- C&W search and best-keeping


def test_keep_smallest_success_replaces_only_smaller_successful_examples():
    best = _cw.Best(jnp.array([jnp.inf, 4.0, 4.0, 4.0]), jnp.zeros((4, 1, 1, 1)), jnp.array([0, 3, 3, 3]))
    candidate = jnp.ones((4, 1, 1, 1))
    new = _cw.keep_smallest_success(
        best, candidate, jnp.array([9.0, 1.0, 1.0, 5.0]), jnp.array([True, True, False, True]), jnp.int32(7)
    )
    np.testing.assert_array_equal(new.squared_l2, [9.0, 1.0, 4.0, 4.0])
    np.testing.assert_array_equal(new.x_adv[:, 0, 0, 0], [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(new.step, [7, 7, 3, 3])


def reference_bounds(found_sequence, const=10.0):
    """Carlini's reference binary search for one sample, as plain Python."""
    lower, upper, consts = 0.0, 1e10, []
    for found in found_sequence:
        consts.append(const)
        if found:
            upper = min(upper, const)
            if upper < 1e9:
                const = (lower + upper) / 2
        else:
            lower = max(lower, const)
            const = (lower + upper) / 2 if upper < 1e9 else const * 10
    return consts


def test_binary_search_matches_the_reference_schedule():
    sequences = [[False, False, True, False], [True, True, False, True], [False] * 4, [True] * 4]
    bounds = _cw.SearchBounds(jnp.full(4, 10.0), jnp.zeros(4), jnp.full(4, 1e10))
    consts = []
    for step in range(4):
        consts.append(np.asarray(bounds.const))
        bounds = _cw.update_bounds(bounds, jnp.array([seq[step] for seq in sequences]))
    for sample, sequence in enumerate(sequences):
        np.testing.assert_allclose([c[sample] for c in consts], reference_bounds(sequence), rtol=1e-6)


def test_more_search_steps_never_lose_the_best_example(problem):
    logits_fn, x, y, _ = problem
    kw = dict(steps=10, lr=0.05, initial_const=0.1)
    one = attacks.cw_l2(logits_fn, x, y, search_steps=1, **kw)
    three = attacks.cw_l2(logits_fn, x, y, search_steps=3, **kw)
    assert not bool(one.success.all())  # the search has something to find
    assert bool(np.all(np.asarray(three.success) >= np.asarray(one.success)))
    fooled = np.asarray(one.success)
    assert bool(np.all(np.asarray(three.norm)[fooled] <= np.asarray(one.norm)[fooled] + 1e-6))
    assert int(three.iterations.max()) > 10  # later search steps did contribute


def test_cw_returns_clean_image_for_samples_never_fooled(problem):
    logits_fn, x, y, _ = problem
    unfoolable = jnp.arange(BATCH) % 2 == 1

    def guarded(variables, images):  # odd samples: a label margin no image in [0,1] can beat
        logits = tiny_apply(variables, images)
        return logits + 1e4 * jax.nn.one_hot(y, CLASSES) * unfoolable[:, None].astype(jnp.float32)

    res = attacks.cw_l2(functools.partial(guarded, problem[3]), x, y, steps=10, search_steps=3, lr=0.05)
    odd = np.asarray(unfoolable)
    np.testing.assert_array_equal(np.asarray(res.x_adv)[odd], np.asarray(x)[odd])
    assert not bool(res.success[odd].any())
    np.testing.assert_array_equal(np.asarray(res.norm)[odd], 0.0)
    np.testing.assert_array_equal(np.asarray(res.iterations)[odd], 0)
    assert bool(res.success[~odd].all())


# ---------------------------------------------------------------- user errors


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f, x, y: attacks.pgd(f, x * 255, y, key=jax.random.key(0)), r"\[0, 1\]"),
        (lambda f, x, y: attacks.pgd(f, x.transpose(0, 3, 1, 2), y, key=jax.random.key(0)), "NCHW"),
        (lambda f, x, y: attacks.pgd(f, x, y), "key"),
        (lambda f, x, y: attacks.mim(f, x, y[:3]), "one integer label"),
        (lambda f, x, y: attacks.mim(f, x, y + 10), "labels in"),
        (lambda f, x, y: attacks.deepfool(f, x, y, candidates=1), "candidates"),
        (lambda f, x, y: attacks.cw_l2(f, x, y, steps=0), "steps"),
        (lambda f, x, y: attacks.pgd(f, x, y, key=jax.random.key(0), loss="dlr"), "loss"),
        (lambda f, x, y: attacks.pgd(f, x, y, key=jax.random.key(0), eps=-1.0), "eps"),
        (lambda f, x, y: attacks.mim(f, x, [str(v) for v in y.tolist()]), "integer class"),
        (lambda f, x, y: attacks.mim(f, x, [[1, 2], [3]]), "ragged"),
        (lambda f, x, y: attacks.cw_l2(f, (x * 255).astype(jnp.uint8), y), "x / 255"),
    ],
)
def test_user_errors_are_one_line_jaxlogit_errors(problem, call, message):
    logits_fn, x, y, _ = problem
    with pytest.raises(JaxlogitError, match=message) as info:
        call(logits_fn, x, y)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ALL)
def test_python_lists_are_accepted_like_arrays(problem, results, name):
    logits_fn, x, y, _ = problem
    res = run(name, logits_fn, np.asarray(x).tolist(), y.tolist())
    np.testing.assert_allclose(res.x_adv, results[name].x_adv, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_an_empty_batch_gives_empty_results(problem, name):
    logits_fn, x, y, _ = problem
    res = run(name, logits_fn, x[:0], y[:0])
    assert res.x_adv.shape == (0,) + x.shape[1:]
    assert res.logits.shape == (0, CLASSES)
    assert res.success.shape == res.norm.shape == res.iterations.shape == (0,)


def test_margin_loss_is_positive_exactly_when_misclassified():
    logits = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    np.testing.assert_allclose(attacks.margin(logits, jnp.array([0, 0])), [-2.0, 2.0])
