"""The shared conventions: one way to hold weights, one batch mapper, one eval-mode corrector."""

from __future__ import annotations

import collections
import dataclasses
import functools
import pathlib

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit import adaptive, attacks, batching, corrector, explain, pipeline
from jaxlogit._weights import StaticFn, split_fn
from jaxlogit.errors import JaxlogitError

TRACES = collections.Counter()


def affine(weights, x, *, scale):
    """A function that holds weights: ``scale * (x @ w + b)``."""
    TRACES["affine"] += 1
    return scale * (x @ weights["w"] + weights["b"])


@flax.struct.dataclass
class AffineModule:
    """A pytree callable that is not a partial (as an equinox module would be)."""

    weights: dict
    scale: float = flax.struct.field(pytree_node=False)

    def __call__(self, x):
        return affine(self.weights, x, scale=self.scale)


@flax.struct.dataclass
class Wrapper:
    """A pytree callable holding a plain ``functools.partial`` (a pytree leaf of its own)."""

    inner: functools.partial

    def __call__(self, x):
        return self.inner(x)


def closure(weights):
    return lambda x: affine(weights, x, scale=2.0)


def make_weights(seed: int) -> dict:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (2,))}


HOLDERS = {
    "functools.partial": lambda w: functools.partial(affine, w, scale=2.0),
    "tree_util.Partial": lambda w: jax.tree_util.Partial(affine, w, scale=2.0),
    "pytree module": lambda w: AffineModule(w, 2.0),
    "closure": closure,
}


@functools.partial(jax.jit, static_argnames="fn_static")
def program(fn_arrays, x, *, fn_static: StaticFn):
    return fn_static.bind(fn_arrays)(x)


def run(fn, x):
    static, arrays = split_fn(fn)
    return program(arrays, x, fn_static=static)


X = jnp.arange(12.0).reshape(4, 3) / 10


# ---------------------------------------------------------------- one way to hold weights


@pytest.mark.parametrize("kind", HOLDERS)
def test_split_then_bind_gives_the_same_function(kind):
    fn = HOLDERS[kind](make_weights(0))
    static, arrays = split_fn(fn)
    expected = 2.0 * (X @ make_weights(0)["w"] + make_weights(0)["b"])
    np.testing.assert_allclose(static.bind(arrays)(X), expected, rtol=1e-6)
    np.testing.assert_allclose(run(fn, X), expected, rtol=1e-6)
    assert len(arrays) == (0 if kind == "closure" else 2)  # a closure's weights are constants


@pytest.mark.parametrize("kind", ["functools.partial", "tree_util.Partial", "pytree module"])
def test_new_weights_of_the_same_shape_do_not_recompile(kind):
    run(HOLDERS[kind](make_weights(0)), X)
    before = TRACES["affine"]
    fresh = HOLDERS[kind](make_weights(1))
    out = run(fresh, X)
    assert TRACES["affine"] == before
    np.testing.assert_allclose(out, fresh(X), rtol=1e-6)  # the new weights were used


def test_a_closure_is_static_so_only_the_same_closure_reuses_the_program():
    fn = closure(make_weights(0))
    run(fn, X)
    before = TRACES["affine"]
    run(fn, X)
    assert TRACES["affine"] == before
    run(closure(make_weights(0)), X)
    assert TRACES["affine"] == before + 1


def test_a_partial_and_a_tree_partial_share_one_program():
    assert (
        split_fn(HOLDERS["functools.partial"](make_weights(0)))[0]
        == split_fn(HOLDERS["tree_util.Partial"](make_weights(1)))[0]
    )
    other_setting = split_fn(jax.tree_util.Partial(affine, make_weights(0), scale=3.0))[0]
    assert other_setting != split_fn(HOLDERS["tree_util.Partial"](make_weights(0)))[0]


def test_weights_of_partials_nested_in_a_partial_are_traced():
    g = functools.partial(lambda w, z: z * w, jnp.full((2,), 2.0))  # a plain partial inside
    composed = adaptive.compose(HOLDERS["functools.partial"](make_weights(0)), g)
    static, arrays = split_fn(composed)
    assert len(arrays) == 3
    np.testing.assert_allclose(static.bind(arrays)(X), composed(X), rtol=1e-6)
    run(composed, X)
    fresh = adaptive.compose(HOLDERS["functools.partial"](make_weights(1)), g)
    expected = fresh(X)
    before = TRACES["affine"]
    np.testing.assert_allclose(run(fresh, X), expected, rtol=1e-6)
    assert TRACES["affine"] == before
    wrapped = Wrapper(HOLDERS["functools.partial"](make_weights(0)))
    static, arrays = split_fn(wrapped)
    assert len(arrays) == 2
    np.testing.assert_allclose(static.bind(arrays)(X), wrapped(X), rtol=1e-6)


@dataclasses.dataclass  # eq without frozen: __hash__ is None
class MutableSetting:
    scale: float


def test_an_unhashable_static_leaf_is_a_one_line_error():
    def scaled(w, x, setting):
        return x * w * setting.scale

    fn = functools.partial(scaled, jnp.ones(3), setting=MutableSetting(2.0))
    with pytest.raises(JaxlogitError, match="unhashable non-array value of type MutableSetting") as error:
        split_fn(fn, "g_fn")
    assert "\n" not in str(error.value) and str(error.value).startswith("g_fn ")
    with pytest.raises(JaxlogitError, match="logits_fn holds an unhashable"):
        attacks.pgd(fn, jnp.zeros((2, 1, 1, 3)), jnp.zeros((2,), jnp.int32), key=jax.random.key(0))
    with pytest.raises(JaxlogitError, match="g_fn holds an unhashable"):
        explain.jacobian(fn, jnp.zeros((2, 3)))


# ---------------------------------------------------------------- one batch mapper


def rowwise(x, y):
    """Row-independent and exact whatever the batch: elementwise ops and a max."""
    return {"scaled": jnp.tanh(x) * 3.0 + y[:, None], "peak": jnp.max(x, axis=-1)}


@pytest.mark.parametrize("pad", batching.PAD_POLICIES)
@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("n", [1, 4, 7, 13])
def test_both_padding_policies_equal_the_unbatched_call(pad, on_device, n):
    x = np.asarray(jax.random.normal(jax.random.key(n), (n, 5)))
    y = np.arange(n, dtype=np.float32)
    seen = []

    def fn(xb, yb):
        seen.append(xb.shape[0])
        return rowwise(xb, yb)

    out = batching.map_batches(fn, x, y, batch_size=4, pad=pad, on_device=on_device)
    expected = rowwise(x, y)
    for key in expected:
        np.testing.assert_array_equal(out[key], expected[key])
        assert isinstance(out[key], jax.Array if on_device else np.ndarray)
    remainder = n % 4
    last = 4 if pad == "full" or remainder == 0 else 1 << (remainder - 1).bit_length()
    assert seen == [4] * (n // 4) + ([last] if remainder else [])


@pytest.mark.parametrize("pad", batching.PAD_POLICIES)
def test_batch_mapper_inside_jit_and_on_an_empty_batch(pad):
    x = jax.random.normal(jax.random.key(0), (6, 5))
    y = jnp.arange(6, dtype=jnp.float32)
    mapped = jax.jit(lambda a, b: batching.map_batches(rowwise, a, b, batch_size=4, pad=pad, on_device=True))
    np.testing.assert_allclose(mapped(x, y)["scaled"], rowwise(x, y)["scaled"], rtol=1e-6)  # jit may fuse
    empty = batching.map_batches(
        rowwise, np.zeros((0, 5), np.float32), np.zeros((0,), np.float32), batch_size=4, pad=pad
    )
    assert empty["scaled"].shape == (0, 5) and empty["peak"].shape == (0,)


def test_batch_mapper_rejects_an_unknown_policy_and_a_bad_size():
    with pytest.raises(JaxlogitError, match="pad policy 'half'"):
        batching.map_batches(rowwise, np.zeros((2, 5)), np.zeros(2), batch_size=4, pad="half")
    with pytest.raises(JaxlogitError, match="batch_size must be a positive int"):
        batching.map_batches(rowwise, np.zeros((2, 5)), np.zeros(2), batch_size=0)


# ---------------------------------------------------------------- one eval-mode corrector


@pytest.fixture(scope="module")
def trained_corrector():
    module = corrector.Corrector(6, hidden=32, keep_prob=0.5)
    params = corrector.init_params(module, key=jax.random.key(0))
    z = jax.random.normal(jax.random.key(1), (9, 6)) * 3
    return module, params, z


def test_eval_fn_is_deterministic_with_dropout_off(trained_corrector):
    module, params, z = trained_corrector
    g = corrector.eval_fn(module, params)
    np.testing.assert_array_equal(g(z), g(z))
    np.testing.assert_array_equal(g(z), module.apply({"params": params}, z, deterministic=True))
    dropped = module.apply({"params": params}, z, deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(dropped, g(z))  # dropout would have changed it


def test_every_user_gets_the_same_eval_mode_corrector(trained_corrector):
    module, params, z = trained_corrector
    g = corrector.eval_fn(module, params)
    trained = pipeline.TrainedCorrector(module, params, {}, pathlib.Path("unused"))
    assert adaptive.corrector_fn is corrector.eval_fn
    assert split_fn(trained.g_fn())[0] == split_fn(g)[0]
    np.testing.assert_array_equal(trained.g_fn()(z), g(z))
    corrected = corrector.corrected_logits(params, module, np.asarray(z), batch_size=4)
    np.testing.assert_allclose(corrected, g(z), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(trained.predict_classes(np.asarray(z)), np.argmax(corrected, axis=-1))
    np.testing.assert_allclose(
        explain.jacobian(g, z), explain.two_layer_jacobian(params, z), rtol=1e-5, atol=1e-5
    )


def test_eval_fn_of_new_params_reuses_the_static_part(trained_corrector):
    module, params, _ = trained_corrector
    other = corrector.init_params(module, key=jax.random.key(5))
    assert split_fn(corrector.eval_fn(module, params))[0] == split_fn(corrector.eval_fn(module, other))[0]
    wider = corrector.Corrector(6, hidden=64)
    assert split_fn(corrector.eval_fn(module, params))[0] != split_fn(corrector.eval_fn(wider, params))[0]
