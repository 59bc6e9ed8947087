"""DeepFool runs each iteration on the still active samples only: same results as the full batch.

``_compaction`` gathers the active rows, a chunk at a time, and scatters the results back; the
reference below is the former implementation, every iteration on all B samples with finished
ones masked out.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import attacks
from jaxlogit.attacks import _compaction, _deepfool


def masked_full_batch_deepfool(logits_fn, x, y, candidates, max_iter, overshoot):
    """Reference: each iteration runs on all B samples; finished samples' steps are masked.

    Returns:
      ``(x_adv (B, H, W, C), iterations (B,))``.
    """
    clean = logits_fn(x)
    _, top = jax.lax.top_k(clean, candidates)
    state = (jnp.zeros_like(x), x, jnp.argmax(clean, axis=-1) == y, jnp.zeros(y.shape, jnp.int32))
    for _ in range(max_iter):
        if not bool(state[2].any()):
            break
        state = full_batch_iteration(logits_fn, x, y, top, overshoot, *state)
    return state[1], state[3]


@functools.partial(jax.jit, static_argnums=0)
def full_batch_iteration(logits_fn, x, y, top, overshoot, r_total, x_adv, active, iterations):
    logits, vjp_fn = jax.vjp(logits_fn, x_adv)
    active = active & (jnp.argmax(logits, axis=-1) == y)
    (grads,) = jax.vmap(vjp_fn)(_deepfool.candidate_cotangents(top, logits.shape[-1]))
    ranked = jnp.take_along_axis(logits, top, axis=1)
    r = _deepfool.linearised_step(ranked[:, 1:] - ranked[:, :1], grads)
    r_total = r_total + jnp.where(active[:, None, None, None], r, 0.0)
    x_adv = jnp.clip(x + (1 + overshoot) * r_total, 0.0, 1.0)
    return r_total, x_adv, active, iterations + active


class SmallCNN(nn.Module):
    """Conv(4) -> tanh -> Dense(5) on 6x6x1 images."""

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (3, 3))(x))
        return nn.Dense(5)(x.reshape(x.shape[0], -1))


def cnn_apply(variables, x):
    return SmallCNN().apply(variables, x)


def curved_logits(x):
    """Logits ``((10 s)^5 + s / 1000, 0, -1)`` with ``s = x[0, 0] - 0.5``: while the quintic
    dominates, DeepFool's linearised step only shrinks ``s`` by about a fifth, so the start
    ``s`` decides the iteration count; the linear term ends it near 0.

    Args:
      x: (B, H, W, 1) images.

    Returns:
      (B, 3) logits.
    """
    s = x[:, 0, 0, 0] - 0.5
    return jnp.stack([(10 * s) ** 5 + s / 1000, jnp.zeros_like(s), jnp.full_like(s, -1.0)], axis=1)


@pytest.fixture(scope="module")
def cnn():
    """SmallCNN partial and 40 random images (> CHUNK: several chunks, the last one padded)."""
    x = jax.random.uniform(jax.random.key(2), (40, 6, 6, 1))
    variables = jax.jit(SmallCNN().init)(jax.random.key(3), x)
    return functools.partial(cnn_apply, variables), x


def assert_same_trajectories(result, reference):
    x_adv, iterations = reference
    np.testing.assert_array_equal(result.iterations, iterations)
    np.testing.assert_allclose(result.x_adv, x_adv, atol=1e-5)


def test_deepfool_equals_full_batch_reference_on_a_cnn(cnn):
    logits_fn, x = cnn
    y = jnp.argmax(logits_fn(x), axis=-1).astype(jnp.int32).at[:3].set(0)  # some start fooled
    res = attacks.deepfool(logits_fn, x, y, candidates=4)
    assert_same_trajectories(res, masked_full_batch_deepfool(logits_fn, x, y, 4, 100, 0.02))
    assert len(set(np.asarray(res.iterations).tolist())) >= 3  # samples stop at different times


def test_deepfool_equals_reference_when_samples_stop_far_apart():
    offsets = jnp.geomspace(1e-3, 0.45, 37)  # s from 0.001 (few steps) to 0.45 (many)
    s = jnp.concatenate([offsets, -offsets[:3]])  # s < 0: misclassified from the start
    x = jnp.full((40, 2, 2, 1), 0.5).at[:, 0, 0, 0].add(s)
    y = jnp.zeros(40, jnp.int32)
    res = attacks.deepfool(curved_logits, x, y, candidates=3)
    assert_same_trajectories(res, masked_full_batch_deepfool(curved_logits, x, y, 3, 100, 0.02))
    iterations = np.asarray(res.iterations)
    assert iterations[:37].min() <= 2 and iterations.max() >= 15  # guards the spread
    assert np.all(iterations[37:] == 0) and bool(res.success.all())
    capped = attacks.deepfool(curved_logits, x, y, candidates=3, max_iter=7)
    assert_same_trajectories(capped, masked_full_batch_deepfool(curved_logits, x, y, 3, 7, 0.02))


def test_deepfool_returns_a_batch_misclassified_from_the_start_unchanged(cnn):
    logits_fn, x = cnn
    y = ((jnp.argmax(logits_fn(x), axis=-1) + 1) % 5).astype(jnp.int32)
    res = attacks.deepfool(logits_fn, x, y, candidates=4)
    assert_same_trajectories(res, masked_full_batch_deepfool(logits_fn, x, y, 4, 100, 0.02))
    np.testing.assert_array_equal(res.x_adv, x)
    np.testing.assert_array_equal(res.norm, 0.0)


# ---------------------------------------------------------------- _compaction


def test_active_rows_lists_active_indices_then_out_of_range_padding():
    active = jnp.array([False, True, True, False, True])
    np.testing.assert_array_equal(_compaction.active_rows(active, 2), [1, 2, 4, 5, 5, 5])
    np.testing.assert_array_equal(_compaction.active_rows(active, 5), [1, 2, 4, 5, 5])


def test_gather_pads_with_zeros_and_scatter_drops_padding():
    tree = {"v": jnp.arange(5.0) + 1, "m": jnp.ones((5, 2), bool)}
    rows = jnp.array([3, 0, 5])
    gathered = _compaction.gather_rows(tree, rows)
    np.testing.assert_array_equal(gathered["v"], [4.0, 1.0, 0.0])
    np.testing.assert_array_equal(gathered["m"][:, 0], [True, True, False])
    updated = _compaction.scatter_rows(tree, rows, {"v": -gathered["v"], "m": ~gathered["m"]})
    np.testing.assert_array_equal(updated["v"], [-1.0, 2.0, 3.0, -4.0, 5.0])
    np.testing.assert_array_equal(updated["m"][:, 1], [False, True, True, False, True])


@pytest.mark.parametrize("chunk", [1, 2, 3, 7])
def test_on_active_rows_updates_each_active_row_once_and_nothing_else(chunk):
    active = jnp.array([True, False, True, True, False, True, False])
    inputs = jnp.arange(7.0) * 10

    def body(inputs_rows, state_rows):
        assert inputs_rows.shape == (chunk,)  # static chunk shape, padded
        visits, total = state_rows
        return visits + 1, total + inputs_rows

    state = (jnp.zeros(7, jnp.int32), jnp.ones(7))
    visits, total = jax.jit(functools.partial(_compaction.on_active_rows, body, chunk=chunk))(
        active, inputs, state
    )
    np.testing.assert_array_equal(visits, active.astype(jnp.int32))
    np.testing.assert_array_equal(total, np.where(active, 1 + np.asarray(inputs), 1.0))
    nothing = _compaction.on_active_rows(body, jnp.zeros(7, bool), inputs, state, chunk=chunk)
    np.testing.assert_array_equal(nothing[1], state[1])


def test_bench_counts_deepfool_work_per_sample():
    from jaxlogit.bench import _attacks

    # Samples that took 0 (misclassified from the start), 1, 3 and 100 (max_iter) steps.
    work = _attacks.deepfool_work(np.array([0, 1, 3, 100]), candidates=10, max_iter=100)
    assert work.forwards == pytest.approx(2 + (0 + 2 + 4 + 100) / 4)
    assert work.gradients == pytest.approx(9 * (0 + 1 + 3 + 100) / 4)


def test_bench_cw_budget_uses_the_cheapest_gradient_step_of_the_run():
    """C&W's cost is counted in the cheapest forward+gradient step the run measured, so a slow
    standalone baseline cannot flatter it."""
    from jaxlogit.bench import _attacks, _report, _run, _timing

    def run(seconds, gradients):
        return _run.AttackRun(
            _timing.Timing(seconds + 1.0, seconds, (seconds,)), _attacks.Work(gradients, gradients), 8, 1.0
        )

    def report(gradient_s, attacks):
        baseline = _run.Baseline(
            _timing.Timing(1.0, 0.01, (0.01,)),
            _timing.Timing(1.0, gradient_s, (gradient_s,)),
            1.0,
            2.0,
            None,
            None,
        )
        return _run.BenchReport(None, {}, 100.0, None, baseline, attacks, (0.0, 0.0))

    cw = _run.AttackBench("cw", run(6.0, 100), None)
    pgd = _run.AttackBench("pgd", run(0.5, 10), None)  # 50 ms per step inside the loop
    assert _report.cw_cost_in_steps(report(0.12, [cw])) == pytest.approx(6.0 / (100 * 0.12))
    assert _report.cw_cost_in_steps(report(0.12, [pgd, cw])) == pytest.approx(6.0 / (100 * 0.05))
    assert _report.cw_cost_in_steps(report(0.04, [pgd, cw])) == pytest.approx(6.0 / (100 * 0.04))
    assert _report.cw_cost_in_steps(report(0.04, [pgd])) is None


def test_bench_weights_as_constants_bakes_the_weights_into_the_attack_program():
    """``--weights-as-constants`` hands the attacks a closure: nothing is traced but the images,
    and the attack returns what it returns with the weights as program inputs."""
    from types import SimpleNamespace

    from jaxlogit.attacks._compile import split_logits_fn
    from jaxlogit.bench import _run

    weights = jnp.arange(12.0).reshape(4, 3) / 10
    model = SimpleNamespace(
        logits_fn=jax.tree_util.Partial(lambda w, x: x.reshape(x.shape[0], 4) @ w, weights)
    )
    as_inputs = _run.attack_logits_fn(model, _run.BenchConfig())
    as_constants = _run.attack_logits_fn(model, _run.BenchConfig(weights_as_constants=True))
    assert len(split_logits_fn(as_inputs)[1]) == 1  # the weights: a traced program input
    assert len(split_logits_fn(as_constants)[1]) == 0
    x = jax.random.uniform(jax.random.key(0), (3, 2, 2, 1))
    y = jnp.argmax(model.logits_fn(x), axis=1)
    key = jax.random.key(1)
    np.testing.assert_array_equal(
        attacks.pgd(as_inputs, x, y, key=key, eps=0.1).x_adv,
        attacks.pgd(as_constants, x, y, key=key, eps=0.1).x_adv,
    )
