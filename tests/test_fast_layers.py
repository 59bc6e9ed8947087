"""FastConv, its input-gradient formulations, max_pool: same values and gradients as the
plain flax / lax layers; ``_xla.jit`` passes its options to the compiler."""

from __future__ import annotations

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxlogit import _xla
from jaxlogit.models import _conv, _pool

# (kernel, stride, padding, input size): stride 1/2, kernels 1/3/7, odd and even sizes,
# zero, symmetric, asymmetric and larger-than-kernel-minus-one paddings (negative crop).
# The cases marked ``extended`` repeat what another case covers (CI runs the other five).
_EXTENDED = pytest.mark.extended
CONV_CASES = [
    pytest.param(1, 1, ((0, 0), (0, 0)), 8, marks=_EXTENDED),
    (1, 2, ((0, 0), (0, 0)), 7),
    (3, 1, ((1, 1), (1, 1)), 8),
    pytest.param(3, 2, ((1, 1), (1, 1)), 8, marks=_EXTENDED),
    pytest.param(3, 2, ((1, 1), (1, 1)), 7, marks=_EXTENDED),
    (3, 2, ((0, 1), (1, 0)), 9),
    (7, 2, ((3, 3), (3, 3)), 12),
    (3, 2, ((3, 3), (2, 2)), 6),
]


def _random(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape)


def _case(kernel: int, size: int, in_channels: int, seed: int):
    """Images (2, size, size+1, I) and a (k, k, I, 5) kernel."""
    return (
        _random((2, size, size + 1, in_channels), seed),
        _random((kernel, kernel, in_channels, 5), seed + 1),
    )


def _assert_each_close(results: dict, want, tolerance: float) -> None:
    """Every method's result has ``want``'s shape and values (within ``tolerance``)."""
    assert results
    for method, got in results.items():
        assert got.shape == want.shape, method
        np.testing.assert_allclose(got, want, atol=tolerance, rtol=tolerance, err_msg=method)


def _conv_outputs_and_grads(x, variables, grad_out, *, kernel, stride, padding):
    """(nn.Conv, FastConv) outputs and (lax, fast) input/kernel VJPs, in one compiled call."""
    modules = [
        cls(5, (kernel, kernel), strides=(stride, stride), padding=padding)
        for cls in (nn.Conv, _conv.FastConv)
    ]
    outputs = [module.apply(variables, x) for module in modules]

    def plain(a, w):
        return lax.conv_general_dilated(
            a, w, (stride, stride), padding, dimension_numbers=_conv.CONV_DIMENSIONS
        )

    def fast(a, w):
        return _conv.fast_conv(a, w, (stride, stride), padding)

    w = variables["params"]["kernel"]
    grads = [jax.vjp(conv, x, w)[1](grad_out) for conv in (plain, fast)]
    return outputs, grads


@pytest.mark.parametrize("kernel,stride,padding,size", CONV_CASES)
def test_fast_conv_matches_nn_conv_and_lax_vjp(kernel, stride, padding, size):
    x = _random((2, size, size + 1, 3), 0)
    shapes = [
        jax.eval_shape(
            cls(5, (kernel, kernel), strides=(stride, stride), padding=padding).init, jax.random.key(1), x
        )
        for cls in (nn.Conv, _conv.FastConv)
    ]
    assert jax.tree.map(lambda s: s.shape, shapes[0]) == jax.tree.map(lambda s: s.shape, shapes[1])
    variables = {"params": {"kernel": _random((kernel, kernel, 3, 5), 2), "bias": _random((5,), 3)}}
    out_shape = jax.eval_shape(
        nn.Conv(5, (kernel, kernel), strides=(stride, stride), padding=padding).apply, variables, x
    ).shape
    run = jax.jit(lambda *args: _conv_outputs_and_grads(*args, kernel=kernel, stride=stride, padding=padding))
    (expected, actual), (expected_grads, actual_grads) = run(x, variables, _random(out_shape, 4))
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(actual_grads, expected_grads):  # input, then kernel gradient
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel,stride,padding,size", CONV_CASES)
@pytest.mark.parametrize("in_channels", [1, 6])
def test_every_input_gradient_method_equals_the_lax_vjp(kernel, stride, padding, size, in_channels):
    x, w = _case(kernel, size, in_channels, 10)
    plain = functools.partial(
        lax.conv_general_dilated,
        window_strides=(stride, stride),
        padding=padding,
        dimension_numbers=_conv.CONV_DIMENSIONS,
    )
    y, vjp = jax.vjp(lambda a: plain(a, w), x)
    methods = sorted(_conv.INPUT_GRADS)
    got = jax.jit(
        lambda g: {
            method: _conv.conv_input_grad(g, w, x.shape, (stride, stride), padding, method=method)
            for method in methods
        }
    )
    g = _random(y.shape, 12)
    _assert_each_close(got(g), vjp(g)[0], 1e-4)


@pytest.mark.parametrize(
    "kernel_shape,strides,method",
    [
        ((3, 3, 1, 16), (1, 1), "scatter"),  # Fashion-MNIST stems
        ((3, 3, 16, 16), (1, 1), "dilated"),
        ((7, 7, 3, 64), (2, 2), "polyphase"),  # resnet50's stem
        ((3, 3, 16, 32), (2, 2), "polyphase"),
        ((3, 3, 128, 128), (2, 2), "dilated"),
        ((1, 1, 16, 32), (2, 2), "dilated"),  # ResNet shortcuts (see _conv's docstring)
    ],
)
def test_input_grad_method_follows_the_channel_limits(kernel_shape, strides, method):
    assert _conv.input_grad_method(kernel_shape, strides) == method


@pytest.mark.parametrize("kernel,stride,padding,size", CONV_CASES)
@pytest.mark.parametrize("in_channels", [1, 6])
def test_every_forward_method_equals_the_lax_convolution(kernel, stride, padding, size, in_channels):
    x, w = _case(kernel, size, in_channels, 20)
    want = lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_conv.CONV_DIMENSIONS)
    methods = [m for m in sorted(_conv.FORWARDS) if m != "subsample" or kernel == 1]
    got = jax.jit(
        lambda a: {m: _conv.conv_forward(a, w, (stride, stride), padding, method=m) for m in methods}
    )(x)
    _assert_each_close(got, want, 1e-5)


def test_subsample_forward_refuses_a_kernel_larger_than_1x1():
    with pytest.raises(ValueError, match="1x1 kernel"):
        _conv.conv_forward(
            jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 2)), (2, 2), ((1, 1), (1, 1)), method="subsample"
        )


@pytest.mark.parametrize(
    "kernel_shape,strides,method",
    [
        ((3, 3, 1, 16), (1, 1), "patches"),  # Fashion-MNIST stems
        ((3, 3, 4, 16), (1, 1), "patches"),
        ((3, 3, 5, 16), (1, 1), "direct"),
        ((3, 3, 1, 16), (2, 2), "direct"),
        ((7, 7, 3, 64), (2, 2), "direct"),  # resnet50's stem
        ((1, 1, 1, 16), (1, 1), "direct"),
        ((1, 1, 16, 32), (2, 2), "subsample"),  # ResNet shortcuts
    ],
)
def test_forward_method_follows_kernel_stride_and_channels(kernel_shape, strides, method):
    assert _conv.forward_method(kernel_shape, strides) == method


def test_xla_jit_reaches_the_compiler_and_keeps_results():
    """Without the options XLA:CPU fuses convolutions into YNNPACK calls; with them it does not."""
    x = _random((8, 7, 7, 32), 15)  # big enough for XLA:CPU to pick YNNPACK by default
    w = _random((3, 3, 32, 32), 16) * 0.1

    def net(a):
        return jnp.sum(jnp.tanh(_conv.conv(a, w, (1, 1), ((1, 1), (1, 1)))))

    plain, tuned = jax.jit(jax.grad(net)), _xla.jit(jax.grad(net))
    np.testing.assert_allclose(tuned(x), plain(x), atol=1e-5)
    assert "ynn_fusion" in plain.lower(x).compile().as_text()
    hlo = tuned.lower(x).compile().as_text()
    assert "convolution(" in hlo and "ynn_fusion" not in hlo


def test_fast_conv_input_gradient_survives_a_fori_loop():
    """Inside ``fori_loop`` (where the barrier matters) the input gradient is still exact."""
    x = _random((2, 8, 8, 3), 5)
    w = _random((3, 3, 3, 4), 6)

    def step(conv, _, z):
        return z + 0.1 * jax.grad(lambda a: jnp.sum(jnp.tanh(conv(a, w))))(z)

    def looped(conv):
        return jax.jit(lambda z: lax.fori_loop(0, 3, lambda i, a: step(conv, i, a), z))(x)

    pads = ((1, 1), (1, 1))
    plain = looped(
        lambda a, k: lax.conv_general_dilated(a, k, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    )
    fast = looped(lambda a, k: _conv.fast_conv(a, k, (2, 2), pads))
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def _pool_outputs_and_grads(x, weights, kernel, stride, padding):
    """(nn.max_pool, _pool.max_pool) outputs and input gradients of ``sum(weights * pool)``."""
    pads = ((padding, padding), (padding, padding))
    pools = (
        lambda a: nn.max_pool(a, (kernel, kernel), strides=(stride, stride), padding=pads),
        lambda a: _pool.max_pool(a, kernel, stride, padding),
    )
    return (
        [pool(x) for pool in pools],
        [jax.grad(lambda a, pool=pool: jnp.sum(weights * pool(a)))(x) for pool in pools],
    )


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [
        pytest.param((2, 8, 6, 3), 2, 2, 0, marks=_EXTENDED),
        ((3, 7, 9, 2), 2, 2, 0),
        ((1, 28, 28, 4), 2, 2, 0),  # 2x2 reshape
        pytest.param((2, 9, 9, 3), 3, 2, 1, marks=_EXTENDED),
        ((1, 12, 7, 2), 3, 2, 1),  # ResNet/DenseNet stems, even and odd
        pytest.param((2, 6, 8, 3), 3, 1, 1, marks=_EXTENDED),
        ((1, 10, 11, 2), 2, 1, 0),
        pytest.param((2, 9, 8, 1), 3, 3, 0, marks=_EXTENDED),
        ((1, 11, 9, 2), 5, 2, 2),
    ],
)
def test_max_pool_matches_nn_max_pool(shape, kernel, stride, padding):
    x = _random(shape, 7)  # continuous values: no ties within a window
    expected_shape = jax.eval_shape(
        lambda a: nn.max_pool(
            a, (kernel, kernel), strides=(stride, stride), padding=((padding, padding), (padding, padding))
        ),
        x,
    ).shape
    (expected, actual), (expected_grad, actual_grad) = jax.jit(
        _pool_outputs_and_grads, static_argnums=(2, 3, 4)
    )(x, _random(expected_shape, 8), kernel, stride, padding)
    assert actual.shape == expected_shape
    np.testing.assert_array_equal(actual, expected)
    # overlapping windows: the same terms, summed in another order
    np.testing.assert_allclose(actual_grad, expected_grad, rtol=1e-6, atol=1e-6)


def test_max_pool_splits_the_gradient_of_tied_maxima():
    """A window whose maximum is held by n inputs gives each 1/n of its gradient; the total
    gradient is kept."""
    x = jnp.array([[1.0, 1.0, 0.0], [0.0, 3.0, 3.0], [2.0, 0.0, 1.0]])[None, :, :, None]
    weights = jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1)
    grad = jax.grad(lambda a: jnp.sum(weights * _pool.max_pool(a, 2, 1)))(x)[0, :, :, 0]
    # windows (top-left corner): (0,0) max 3 at (1,1); (0,1) max 3 at (1,1),(1,2);
    # (1,0) max 3 at (1,1); (1,1) max 3 at (1,1),(1,2)
    expected = np.zeros((3, 3), np.float32)
    expected[1, 1] = 1 + 2 / 2 + 3 + 4 / 2
    expected[1, 2] = 2 / 2 + 4 / 2
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert float(grad.sum()) == pytest.approx(float(weights.sum()))


def test_max_pool_falls_back_to_flax_for_windows_beyond_int32_bits():
    x = _random((1, 9, 9, 2), 3)
    expected = nn.max_pool(x, (6, 6), strides=(3, 3), padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(_pool.max_pool(x, 6, 3, padding=1), expected)
    with pytest.raises(ValueError, match="up to 5x5"):
        _pool.max_pool_windows(x, 6, 3, 1)


def test_xla_jit_works_nested_inside_another_jit():
    """JAX refuses compiler options on nested jits: inside a trace the plain jit runs."""
    inner = _xla.jit(lambda a: jnp.sin(a) * 2.0)
    outer = _xla.jit(lambda a: inner(a) + 1.0)
    x = jnp.arange(4.0)
    np.testing.assert_allclose(outer(x), jnp.sin(x) * 2.0 + 1.0, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda a: inner(a).sum())(x), 2.0 * jnp.cos(x), rtol=1e-6)


def test_xla_jit_falls_back_to_plain_jit_when_the_options_are_rejected(monkeypatch):
    """A jaxlib that does not know the option: one warning, then XLA's defaults, same results."""
    monkeypatch.setattr(_xla, "CONV_OPTIONS", {"xla_jaxlogit_no_such_option": "1"})
    monkeypatch.setattr(_xla, "_rejected", [])
    f = _xla.jit(lambda a: jnp.cos(a) + 1.0)
    x = jnp.arange(3.0)
    with pytest.warns(RuntimeWarning, match="rejects jaxlogit's XLA options"):
        np.testing.assert_allclose(f(x), jnp.cos(x) + 1.0, rtol=1e-6)
    assert len(_xla._rejected) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        np.testing.assert_allclose(_xla.jit(jnp.sin)(x), jnp.sin(x), rtol=1e-6)


def test_bench_conv_grad_pool_switch_traces_select_and_scatter():
    """The benchmark's baseline really differentiates the pool with select_and_scatter."""
    from benchmarks import bench_conv_grad
    from jaxlogit import models
    from jaxlogit.models import _resnet

    module = _resnet.resnet_tiny(small_stem=False)  # a 3x3/2 stem max-pool
    variables = models.init(module, jax.random.key(0), (16, 16, 1))
    f = models.logits_fn(module, variables, mean=(0.5,), std=(0.25,))

    def traced_grad(own_pool):
        g = bench_conv_grad.with_max_pool(f, own_pool)
        return str(jax.make_jaxpr(jax.grad(lambda b: g(b).sum()))(_random((1, 16, 16, 1), 1)))

    assert "select_and_scatter" in traced_grad(False)
    assert "select_and_scatter" not in traced_grad(True)


def test_bench_plain_convolutions_swaps_every_formulation_and_restores_them():
    from benchmarks import bench_conv_grad

    x, w = _random((1, 6, 6, 1), 30), _random((3, 3, 1, 2), 31)

    def traced(a):  # the stem's forward and input gradient
        return str(
            jax.make_jaxpr(
                lambda b: jax.grad(lambda c: _conv.fast_conv(c, w, (1, 1), ((1, 1), (1, 1))).sum())(b)
            )(a)
        )

    with bench_conv_grad.plain_convolutions(True):
        plain = traced(x)
    own = traced(x)
    assert "concatenate" not in plain and "dot_general" not in plain  # lax conv, dilated VJP
    assert "concatenate" in own and "dot_general" in own  # im2col forward, scatter gradient
