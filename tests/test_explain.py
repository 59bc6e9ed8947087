"""jaxlogit.explain: Jacobians against finite differences and the closed form, supporting
classes against a direct count, Bhattacharyya properties, and the ablation on a crafted g."""

from __future__ import annotations

import collections
import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import explain
from jaxlogit.errors import JaxlogitError
from jaxlogit.explain import _ablation, _jacobian, _similarity, _supporting, _two_layer

C, D = 6, 16


def two_layer_params(
    seed: int, num_in: int = C, hidden: int = D, bias_shift: float = 0.0, dtype=np.float32
) -> dict:
    """Random params in the corrector's layout; ``bias_shift`` moves how many units are active."""
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    return {
        "hidden": {"kernel": normal(num_in, hidden), "bias": normal(hidden) + dtype(bias_shift)},
        "output": {"kernel": normal(hidden, C), "bias": normal(C)},
    }


def random_logits(seed: int, batch: int, scale: float = 1.0, dtype=np.float32) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal((batch, C))).astype(dtype)


def two_layer_apply(params: dict, z: jax.Array) -> jax.Array:
    """The corrector's forward pass in eval mode, written independently of jaxlogit."""
    hidden = jax.nn.relu(z @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return hidden @ params["output"]["kernel"] + params["output"]["bias"]


def closed_form(params: dict, z: np.ndarray) -> np.ndarray:
    """``W2^T diag(relu'(h)) W1^T`` per example, in numpy."""
    w1, b1 = np.asarray(params["hidden"]["kernel"]), np.asarray(params["hidden"]["bias"])
    w2 = np.asarray(params["output"]["kernel"])
    active = (np.asarray(z) @ w1 + b1 > 0).astype(w1.dtype)
    return np.einsum("di,bd,kd->bik", w2, active, w1)


@pytest.fixture(scope="module")
def net():
    params = two_layer_params(0)
    z = random_logits(1, 7, scale=2.0)
    return params, jax.tree_util.Partial(two_layer_apply, params), z


def test_jacobian_matches_central_finite_differences():
    params = two_layer_params(2, dtype=np.float64)
    hidden, output = params["hidden"], params["output"]
    z = random_logits(3, 3, dtype=np.float64)

    def numpy_g(logits):
        return np.maximum(logits @ hidden["kernel"] + hidden["bias"], 0) @ output["kernel"]

    eps = 1e-6
    steps = eps * np.eye(C)
    finite = np.stack(
        [(numpy_g(z + steps[k]) - numpy_g(z - steps[k])) / (2 * eps) for k in range(C)], axis=-1
    )
    with jax.enable_x64(True):
        H = np.asarray(explain.jacobian(jax.tree_util.Partial(two_layer_apply, params), z))
    assert H.dtype == np.float64 and H.shape == (3, C, C)
    np.testing.assert_allclose(H, finite, rtol=1e-6, atol=1e-7)


def test_jacobian_matches_closed_form(net):
    params, g_fn, z = net
    np.testing.assert_allclose(explain.jacobian(g_fn, z), closed_form(params, z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bias_shift", [-1.5, 0.0, 10.0], ids=["few-active", "half-active", "all-active-dense"]
)
def test_two_layer_jacobian_equals_jacobian(bias_shift):
    params = two_layer_params(4, bias_shift=bias_shift)
    z = random_logits(5, 9)
    expected = explain.jacobian(lambda logits: two_layer_apply(params, logits), z)
    np.testing.assert_allclose(
        explain.two_layer_jacobian(params, z, chunk_size=4), expected, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        explain.two_layer_jacobian({"params": params}, z), expected, rtol=1e-5, atol=1e-5
    )


def test_two_layer_jacobian_under_jit_equals_eager(net):
    params, _, z = net
    jitted = jax.jit(explain.two_layer_jacobian)(params, z)
    np.testing.assert_allclose(jitted, explain.two_layer_jacobian(params, z), rtol=1e-5, atol=1e-5)
    closed_over = jax.jit(lambda: explain.two_layer_jacobian(params, z))()
    np.testing.assert_allclose(closed_over, jitted, rtol=1e-5, atol=1e-5)


def test_single_layer_jacobian_is_transposed_kernel():
    kernel = random_logits(6, C)
    params = {"output": {"kernel": kernel, "bias": np.ones(C, np.float32)}}
    z = random_logits(7, 3)
    H = explain.two_layer_jacobian(params, z)
    np.testing.assert_allclose(H, explain.jacobian(lambda logits: logits @ kernel + 1.0, z), rtol=1e-6)
    np.testing.assert_allclose(H[2], np.asarray(kernel).T)


@pytest.mark.parametrize("max_active", [0, 1, 7, 14, 15, 16])
def test_gathered_width_covers_active_units(max_active):
    width = _two_layer._hidden_width(max_active, D)
    assert max_active <= width <= D
    assert width == D or width % int(np.ceil(D / _two_layer.WIDTH_BUCKETS)) == 0


def test_supporting_scores_fast_path_equals_full_jacobian(net):
    _, g_fn, z = net
    y = jnp.arange(z.shape[0]) % C
    H = np.asarray(explain.jacobian(g_fn, z))
    expected = np.stack([H[b, int(y[b])] - H[b].mean(axis=0) for b in range(len(H))])
    np.testing.assert_allclose(explain.supporting_scores(g_fn, z, y), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(explain.supporting_scores_from_jacobian(H, y), expected, rtol=1e-6, atol=1e-6)


def test_chunked_equals_unchunked_for_a_ragged_batch(net):
    _, g_fn, z = net  # 7 rows: chunks 3 + 3 + 1
    y = jnp.arange(7) % C
    np.testing.assert_allclose(
        explain.jacobian(g_fn, z, chunk_size=3),
        explain.jacobian(g_fn, z, chunk_size=64),
        rtol=1e-6,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        explain.supporting_scores(g_fn, z, y, chunk_size=3),
        explain.supporting_scores(g_fn, z, y, chunk_size=64),
        rtol=1e-6,
        atol=1e-6,
    )
    params = net[0]
    np.testing.assert_allclose(
        explain.two_layer_jacobian(params, z, chunk_size=3), explain.jacobian(g_fn, z), rtol=1e-5, atol=1e-5
    )


def test_new_batch_size_and_new_weights_do_not_retrace():
    traces = []

    def apply(params, logits):
        traces.append(logits.shape)
        return two_layer_apply(params, logits)

    params = two_layer_params(8)
    z = random_logits(9, 11)
    explain.jacobian(jax.tree_util.Partial(apply, params), z[:7], chunk_size=4)  # chunks 4, 3 -> 4
    seen = len(traces)
    H_new_batch = explain.jacobian(jax.tree_util.Partial(apply, params), z, chunk_size=4)  # 4, 4, 3 -> 4
    other = two_layer_params(10)
    H_other = explain.jacobian(jax.tree_util.Partial(apply, other), z, chunk_size=4)
    assert len(traces) == seen
    np.testing.assert_allclose(H_new_batch, closed_form(params, z), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(H_other, closed_form(other, z), rtol=1e-5, atol=1e-5)


def test_jacobian_inside_jit_and_on_empty_batch(net):
    params, g_fn, z = net
    jitted = jax.jit(lambda logits: explain.jacobian(g_fn, logits))(z)
    np.testing.assert_allclose(jitted, closed_form(params, z), rtol=1e-5, atol=1e-5)
    assert explain.jacobian(g_fn, z[:0]).shape == (0, C, C)


def test_malformed_inputs_raise_one_line_errors(net):
    params, g_fn, z = net
    with pytest.raises(JaxlogitError, match=r"shape \(B, C\)"):
        explain.jacobian(g_fn, z[0])
    with pytest.raises(JaxlogitError, match="only 6"):
        explain.supporting_scores(g_fn, z, jnp.full((7,), C))
    with pytest.raises(JaxlogitError, match="'hidden'"):
        explain.two_layer_jacobian({"hidden": {"w": 1}, "output": params["output"]}, z)
    with pytest.raises(JaxlogitError, match="chunk_size"):
        explain.jacobian(g_fn, z, chunk_size=0)


def expected_supporting(scores: np.ndarray, per_example: int, top: int) -> tuple[list[int], list[int]]:
    """Direct count: each row's ``per_example`` largest classes, most votes first, ties by index."""
    votes = collections.Counter(
        int(k) for row in scores for k in np.argsort(-row, kind="stable")[:per_example]
    )
    counts = [votes[k] for k in range(scores.shape[1])]
    order = sorted(range(scores.shape[1]), key=lambda k: (-counts[k], k))
    return order[:top], counts


@pytest.mark.parametrize(("per_example", "top"), [(1, 3), (3, 3), (4, 8)])
def test_supporting_classes_match_a_direct_count(per_example, top):
    scores = np.random.default_rng(11).standard_normal((25, 8)).astype(np.float32)
    classes, counts = explain.supporting_classes(jnp.asarray(scores), per_example=per_example, top=top)
    expected_classes, expected_counts = expected_supporting(scores, per_example, top)
    assert classes.tolist() == expected_classes
    assert counts.tolist() == expected_counts
    assert int(counts.sum()) == 25 * per_example


def test_supporting_classes_break_count_ties_by_class_index():
    scores = -jnp.eye(5)[::-1]  # each row leaves out a different class: every class gets 4 votes
    classes, counts = explain.supporting_classes(scores, per_example=4, top=5)
    expected_classes, expected_counts = expected_supporting(np.asarray(scores), 4, 5)
    assert classes.tolist() == expected_classes and counts.tolist() == expected_counts
    assert classes.tolist() == sorted(classes.tolist())  # all counts equal -> index order


def test_scaled_k_keeps_the_papers_k_on_imagenet_and_shrinks_on_few_classes():
    ks = [explain.scaled_k(c) for c in range(1, 1200)]
    assert ks[1000 - 1] == _supporting.PAPER_K
    assert explain.scaled_k(10) < 10
    assert all(1 <= k <= min(c, _supporting.PAPER_K) for c, k in zip(range(1, 1200), ks))
    assert ks == sorted(ks)
    with pytest.raises(JaxlogitError):
        explain.scaled_k(0)


def test_bhattacharyya_properties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 20, 50), rng.integers(0, 20, 50)
    p, q = a / a.sum(), b / b.sum()
    assert float(explain.bhattacharyya(a, b)) == pytest.approx(np.sum(np.sqrt(p * q)), rel=1e-5)
    assert float(explain.bhattacharyya(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert float(explain.bhattacharyya([3, 0, 1, 0], [0, 5, 0, 2])) == 0.0
    assert float(explain.bhattacharyya(a, b)) == pytest.approx(float(explain.bhattacharyya(b, a)), abs=1e-7)
    assert float(explain.bhattacharyya(7 * a, b)) == pytest.approx(
        float(explain.bhattacharyya(a, b)), rel=1e-6
    )
    for _ in range(20):
        value = float(explain.bhattacharyya(rng.integers(0, 5, 10) + 1, rng.integers(0, 5, 10)))
        assert 0.0 <= value <= 1.0
    for bad in ([1, 2], [0, 0, 0], [1, -1, 2]):
        with pytest.raises(JaxlogitError):
            explain.bhattacharyya(bad, [1, 1, 1])


def corrector_using_3_and_4(z: jax.Array) -> jax.Array:
    """A crafted corrector: class 0's corrected logit is carried by the logits of classes 3 and 4."""
    return z.at[:, 0].add(z[:, 3] + z[:, 4])


def test_ablating_the_supporting_classes_returns_to_the_adversarial_class():
    noise = np.random.default_rng(12).uniform(-0.2, 0.2, (8, 5)).astype(np.float32)
    z_adv = np.array([0.0, 5.0, 0.0, 3.0, 3.0], np.float32) + noise  # backbone says 1; g adds ~6 to class 0
    y, adv_pred = np.zeros(8, np.int32), np.argmax(z_adv, -1)
    assert adv_pred.tolist() == [1] * 8
    result = explain.ablate_supporting(corrector_using_3_and_4, z_adv, y, adv_pred, np.array([3, 4]))
    assert result.pred_before.tolist() == y.tolist() and float(result.failure_rate_before) == 0.0
    assert result.pred_after.tolist() == adv_pred.tolist()
    assert (float(result.failure_rate), float(result.adversarial_rate), float(result.broken_rate)) == (
        1.0,
        1.0,
        1.0,
    )
    control = explain.ablate_supporting(corrector_using_3_and_4, z_adv, y, adv_pred, np.full((8, 1), 2))
    assert control.pred_after.tolist() == y.tolist() and float(control.failure_rate) == 0.0


def test_ablation_matches_a_numpy_reference_on_random_logits():
    rng = np.random.default_rng(13)
    z_adv = (4.0 * rng.standard_normal((40, 5))).astype(np.float32)
    y, adv_pred = np.arange(40) % 5, np.argmax(z_adv, -1)
    supporting = rng.integers(0, 5, (40, 2))
    lowered = z_adv.copy()
    for row, classes in enumerate(supporting):
        lowered[row, np.unique(classes)] -= 20.0

    def numpy_g(z):
        return np.concatenate([z[:, :1] + z[:, 3:4] + z[:, 4:5], z[:, 1:]], axis=1)

    before, after = np.argmax(numpy_g(z_adv), -1), np.argmax(numpy_g(lowered), -1)
    result = explain.ablate_supporting(corrector_using_3_and_4, z_adv, y, adv_pred, supporting, chunk_size=16)
    assert result.pred_before.tolist() == before.tolist() and result.pred_after.tolist() == after.tolist()
    assert float(result.failure_rate) == pytest.approx(np.mean(after != y))
    assert float(result.adversarial_rate) == pytest.approx(np.mean(after == adv_pred))
    assert float(result.broken_rate) == pytest.approx(
        np.sum((before == y) & (after != y)) / np.sum(before == y)
    )


def test_instance_scores_are_the_top_k_supporting_scores(net):
    _, g_fn, z = net
    result = explain.instance_scores(g_fn, {"pgd": z[0], "cw": z[1]}, y=2, k=3)
    assert list(result) == ["pgd", "cw"]
    for row, name in enumerate(result):
        full = np.asarray(explain.supporting_scores(g_fn, z[row : row + 1], jnp.array([2])))[0]
        assert result[name].classes.tolist() == np.argsort(-full)[:3].tolist()
        np.testing.assert_allclose(result[name].scores, np.sort(full)[::-1][:3], rtol=1e-6)


DOCUMENTED_MODULES = [explain, _ablation, _jacobian, _similarity, _supporting, _two_layer]


@pytest.mark.parametrize("module", DOCUMENTED_MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_hold(module):
    outcome = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert outcome.attempted > 0 and outcome.failed == 0
