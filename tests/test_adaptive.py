"""Adaptive evaluation: the attacks on g∘f, the sanity checks of the evaluation literature, detection.

A synthetic problem keeps it fast: 6x6 images near one of 4 prototypes, a nearest-prototype
backbone, and a real corrector trained (Algorithm 1) on its clean and PGD logits.
"""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import adaptive, attacks, corrector
from jaxlogit.attacks import _adaptive as engine
from jaxlogit.errors import JaxlogitError

NUM_CLASSES, SIDE, EPS = 4, 6, 0.25


def nearest_prototype(prototypes: jax.Array, x: jax.Array) -> jax.Array:
    """Logits ``-||x - p_c||^2`` up to a per-image constant: (B, 6, 6, 1) -> (B, 4)."""
    flat = x.reshape(x.shape[0], -1)
    return 2.0 * flat @ prototypes.T - jnp.sum(prototypes**2, axis=1)


def images(prototypes: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
    x = np.clip(prototypes[y] + rng.normal(0.0, 0.15, prototypes[y].shape), 0.0, 1.0)
    return x.reshape(n, SIDE, SIDE, 1).astype(np.float32), y


@pytest.fixture(scope="module")
def defended():
    """Backbone ``f``, a corrector ``g`` trained against oblivious PGD, 96 test images and
    their oblivious PGD logits."""
    prototypes = np.random.default_rng(0).uniform(0.2, 0.8, (NUM_CLASSES, SIDE * SIDE)).astype(np.float32)
    f = jax.tree_util.Partial(nearest_prototype, jnp.asarray(prototypes))
    x_train, y_train = images(prototypes, 512, seed=1)
    adv_train = attacks.pgd(f, x_train, y_train, key=jax.random.key(0), eps=EPS, step_size=EPS / 4)
    trained = corrector.train(
        {
            "clean_logits": np.asarray(f(x_train)),
            "adv_logits": np.asarray(adv_train.logits),
            "labels": y_train,
        },
        num_classes=NUM_CLASSES,
        hidden=32,
        epochs=20,
        batch_size=64,
        lr=1e-2,
        key=jax.random.key(0),
        holdout_fraction=0.0,
        progress=False,
    )
    g = adaptive.corrector_fn(trained.module, trained.params)
    x, y = images(prototypes, 96, seed=2)
    oblivious = attacks.pgd(f, x, y, key=jax.random.key(1), eps=EPS, step_size=EPS / 4)
    return types.SimpleNamespace(
        f=f,
        g=g,
        module=trained.module,
        params=trained.params,
        x=x,
        y=y,
        oblivious_logits=np.asarray(oblivious.logits),
    )


def small_config(**overrides) -> adaptive.AdaptiveConfig:
    return adaptive.AdaptiveConfig(
        **{"eps": EPS, "steps": 12, "restarts": 2, "chunk": 4, "batch_size": 32, **overrides}
    )


@pytest.fixture(scope="module")
def evaluation(defended) -> adaptive.Evaluation:
    return adaptive.evaluate(
        defended.f,
        defended.g,
        defended.x,
        defended.y,
        config=small_config(),
        oblivious_logits=defended.oblivious_logits,
    )


def test_the_setting_is_meaningful(defended, evaluation):
    acc = adaptive.accuracies(evaluation)
    assert acc["clean"] >= 95 and acc["clean_corrected"] >= 90
    assert acc["no_defense"] <= 20, "oblivious PGD must break the undefended backbone"
    assert acc[adaptive.OBLIVIOUS] >= acc["no_defense"] + 20, "the corrector must help against oblivious PGD"


def test_compose_is_g_after_f(defended):
    gf = adaptive.compose(defended.f, defended.g)
    np.testing.assert_allclose(gf(defended.x), defended.g(defended.f(defended.x)), rtol=1e-6)
    expected = defended.module.apply({"params": defended.params}, defended.f(defended.x), deterministic=True)
    np.testing.assert_allclose(defended.g(defended.f(defended.x)), expected, rtol=1e-6)


def test_new_weights_reuse_the_compiled_attack(defended):
    x, y = defended.x[:8], defended.y[:8]
    objective = adaptive.loss_on_defended(defended.f, defended.g, "ce")
    tracked = attacks.track_init(jnp.asarray(x), NUM_CLASSES)
    attacks.linf_advance(objective, x, y, x, tracked, eps=EPS, step_size=EPS / 8, steps=2)
    compiled = engine._advance_program._cache_size()
    shifted = jax.tree.map(lambda p: p + 0.01, defended.params)
    other = adaptive.loss_on_defended(defended.f, adaptive.corrector_fn(defended.module, shifted), "ce")
    attacks.linf_advance(other, x, y, x, tracked, eps=EPS / 2, step_size=EPS / 16, steps=3, steps_spent=2)
    assert engine._advance_program._cache_size() == compiled


def test_more_steps_never_raise_accuracy(defended):
    gf = adaptive.compose(defended.f, defended.g)
    key = jax.random.key(3)
    runs = {
        (steps, restarts): attacks.pgd_restarts(
            gf, defended.x, defended.y, key=key, eps=EPS, steps=steps, restarts=restarts, loss="margin"
        )
        for steps, restarts in ((3, 1), (12, 1), (12, 2))
    }
    short, long, restarted = runs[(3, 1)].success, runs[(12, 1)].success, runs[(12, 2)].success
    assert np.all(long[short]) and np.all(restarted[long]), (
        "a sample fooled with fewer steps must stay fooled"
    )
    assert np.sum(long) > np.sum(short), "the check must see samples fooled only by the longer attack"
    np.testing.assert_array_equal(runs[(3, 1)].iterations[short], runs[(12, 1)].iterations[short])


def test_steps_curve_is_non_increasing_and_ends_at_the_worst_case(evaluation):
    budgets = list(range(0, evaluation.budget + 1))
    curve = adaptive.steps_curve(evaluation, budgets)
    values = np.array(list(curve.values()))
    assert np.all(np.diff(values) <= 0)
    assert values[0] > values[-1], "some samples must be fooled only after several steps"
    assert values[-1] == adaptive.accuracies(evaluation)[adaptive.WORST]
    assert values[0] <= adaptive.accuracies(evaluation)[adaptive.OBLIVIOUS]  # s=0: the random starts


def test_unbounded_eps_drives_accuracy_to_zero(defended):
    config = small_config(eps=1.0, restarts=1)
    ev = adaptive.evaluate(defended.f, defended.g, defended.x, defended.y, config=config, names=("pgd_ce",))
    assert adaptive.accuracies(ev)["clean_corrected"] >= 90.0
    assert adaptive.accuracies(ev)["pgd_ce"] <= 2.0


def test_adaptive_at_least_as_strong_as_oblivious_on_every_subset(evaluation):
    masks = adaptive.robust_masks(evaluation)
    assert not np.any(masks[adaptive.WORST] & ~masks[adaptive.OBLIVIOUS])
    rng = np.random.default_rng(0)
    for _ in range(20):
        subset = rng.choice(len(evaluation.labels), size=24, replace=False)
        assert masks[adaptive.WORST][subset].mean() <= masks[adaptive.OBLIVIOUS][subset].mean()
    acc = adaptive.accuracies(evaluation)
    assert acc[adaptive.ADAPTIVE_WORST] < acc[adaptive.OBLIVIOUS], "attacking g∘f must beat attacking f alone"


def test_chunked_run_with_dropped_samples_equals_one_program(defended):
    gf = adaptive.compose(defended.f, defended.g)
    config = small_config(eps=0.1, chunk=5, batch_size=40, seed=7)  # small eps: some samples survive
    tracked = adaptive.run_objective(
        attacks.loss_objective(gf, "ce"), defended.x, defended.y, config=config, num_classes=NUM_CLASSES
    )
    whole = attacks.pgd_restarts(
        gf,
        defended.x,
        defended.y,
        key=jax.random.key(7),
        eps=config.eps,
        steps=config.steps,
        restarts=config.restarts,
        step_size=config.step,
    )
    np.testing.assert_array_equal(tracked.success, whole.success)
    np.testing.assert_array_equal(tracked.first_success, np.where(whole.success, whole.iterations, -1))
    np.testing.assert_allclose(
        tracked.x_adv[whole.success], np.asarray(whole.x_adv)[whole.success], atol=1e-6
    )
    assert 0 < tracked.success.sum() < len(defended.y)


def test_attack_results_stay_in_the_ball_and_agree_with_the_model(defended, evaluation):
    gf = adaptive.compose(defended.f, defended.g)
    res = attacks.pgd_restarts(
        gf, defended.x, defended.y, key=jax.random.key(0), eps=EPS, steps=5, restarts=2
    )
    assert float(jnp.max(res.norm)) <= EPS + 1e-6
    assert float(jnp.min(res.x_adv)) >= 0.0 and float(jnp.max(res.x_adv)) <= 1.0
    np.testing.assert_array_equal(res.success, np.argmax(gf(res.x_adv), -1) != defended.y)
    for name in adaptive.ADAPTIVE_ATTACKS:
        candidate = evaluation.attacks[name]
        np.testing.assert_array_equal(
            candidate.first_success >= 0, adaptive.fooled(candidate, evaluation.labels)
        )


def never_succeeds(objective, x_adv, side) -> attacks.Judged:
    """``objective`` with success hidden, so the engine keeps the highest-value iterate."""
    judged = objective(x_adv, side)
    return judged._replace(success=jnp.zeros_like(judged.success))


def test_logit_matching_pulls_the_logits_to_the_target(defended):
    clean = np.asarray(defended.f(defended.x))
    z_target = clean[adaptive.matching_targets(clean, defended.y)]
    objective = adaptive.logit_matching(defended.f, defended.g)
    judged = objective(defended.x, (defended.y, z_target))
    np.testing.assert_allclose(judged.value, -np.sum((clean - z_target) ** 2, axis=1), rtol=1e-5)
    np.testing.assert_array_equal(judged.success, np.argmax(defended.g(clean), -1) != defended.y)
    config = small_config(eps=1.0, step_size=0.005, steps=100, restarts=1, chunk=25)
    closest = adaptive.run_objective(
        jax.tree_util.Partial(never_succeeds, objective),
        defended.x,
        (defended.y, z_target),
        config=config,
        num_classes=NUM_CLASSES,
    )
    reached = np.sum((np.asarray(defended.f(closest.x_adv)) - z_target) ** 2, axis=1)
    assert np.mean(reached < -judged.value) >= 0.9 and np.median(reached / -judged.value) < 0.5
    fooling = adaptive.run_objective(
        objective, defended.x, (defended.y, z_target), config=config, num_classes=NUM_CLASSES
    )
    assert np.mean(fooling.success) >= 0.9


def test_matching_targets_are_the_nearest_image_of_another_class():
    rng = np.random.default_rng(0)
    z, labels = rng.normal(size=(30, 5)), rng.integers(0, 3, 30)
    targets = adaptive.matching_targets(z, labels)
    for i, j in enumerate(targets):
        others = np.flatnonzero(labels != labels[i])
        assert labels[j] != labels[i]
        assert j == others[np.argmin(np.linalg.norm(z[others] - z[i], axis=1))]


def test_keep_best_keeps_the_first_success():
    x = jnp.zeros((3, 1, 1, 1))
    tracked = attacks.track_init(x, 2)
    logits = jnp.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    first = attacks.Judged(
        value=jnp.array([1.0, 1.0, 1.0]), success=jnp.array([True, False, False]), logits=logits
    )
    tracked = engine.keep_best(tracked, x + 0.1, first, 1)
    second = attacks.Judged(
        value=jnp.array([5.0, 0.5, 5.0]), success=jnp.array([True, False, True]), logits=logits
    )
    tracked = engine.keep_best(tracked, x + 0.2, second, 2)
    np.testing.assert_allclose(tracked.x_adv[:, 0, 0, 0], [0.1, 0.1, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(tracked.first_success, [1, -1, 2])
    np.testing.assert_array_equal(tracked.success, [True, False, True])


def brute_force_auc(negative, positive) -> float:
    wins = [(p > n) + 0.5 * (p == n) for p in positive for n in negative]
    return float(np.mean(wins))


def test_roc_auc_is_the_pairwise_win_rate_with_ties_halved():
    rng = np.random.default_rng(0)
    negative, positive = rng.integers(0, 5, 40), rng.integers(2, 8, 30)
    assert adaptive.roc_auc(negative, positive) == pytest.approx(brute_force_auc(negative, positive))
    assert adaptive.roc_auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert adaptive.roc_auc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert adaptive.roc_auc([1.0, 1.0], [1.0]) == 0.5


def test_average_ranks_share_ties():
    np.testing.assert_allclose(adaptive.average_ranks(np.array([3.0, 1.0, 3.0, 2.0])), [3.5, 1.0, 3.5, 2.0])


def test_detection_score_and_flag():
    z = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    np.testing.assert_allclose(adaptive.detection_scores(z, z), 0.0, atol=1e-12)
    assert not adaptive.flagged(z, z).any()
    swapped = z[:, [1, 0, 2]]  # the corrector moves the backbone's confidence to another class
    scores = adaptive.detection_scores(z, swapped)
    assert np.all(scores > 0.5) and adaptive.flagged(z, swapped).all()


def test_detection_report_scores_each_attack_against_clean(defended, evaluation):
    g = jax.jit(defended.g)

    def correct(logits):
        return np.asarray(g(logits))

    report = adaptive.detection(evaluation)
    assert set(report) == {"clean", adaptive.OBLIVIOUS, *adaptive.ADAPTIVE_ATTACKS, adaptive.WORST}

    def score(c):
        return adaptive.detection_scores(c.backbone_logits, correct(c.backbone_logits))

    clean = score(evaluation.clean)
    per_attack = {}
    for name, candidate in evaluation.attacks.items():
        per_attack[name] = score(candidate)
        assert report[name]["auc"] == pytest.approx(adaptive.roc_auc(clean, per_attack[name]), abs=1e-4)
    # worst case: per sample the least suspicious example among those that fool g∘f
    chosen = []
    for i in range(len(evaluation.labels)):
        fooling = [n for n, c in evaluation.attacks.items() if adaptive.fooled(c, evaluation.labels)[i]]
        chosen.append(min(per_attack[n][i] for n in (fooling or evaluation.attacks)))
    assert report[adaptive.WORST]["auc"] == pytest.approx(adaptive.roc_auc(clean, np.array(chosen)), abs=1e-4)


def test_user_errors_are_one_line():
    with pytest.raises(JaxlogitError, match="steps"):
        adaptive.AdaptiveConfig(steps=0)
    with pytest.raises(JaxlogitError, match="two classes"):
        adaptive.matching_targets(np.zeros((3, 4)), np.zeros(3, np.int32))
    with pytest.raises(JaxlogitError, match="key"):
        attacks.pgd_restarts(
            lambda x: x.reshape(x.shape[0], -1)[:, :2],
            np.zeros((2, 2, 2, 1), np.float32),
            np.zeros(2, np.int32),
            key=None,
        )
