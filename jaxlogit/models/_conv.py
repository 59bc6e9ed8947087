"""The convolution every backbone uses: formulations chosen per layer shape for XLA:CPU.

An attack differentiates the network with respect to its input, so each convolution's forward
pass and input gradient run once per attack step. XLA:CPU computes ``lax.conv_general_dilated``
and the input gradient ``jax.vjp`` derives (a convolution of the stride-dilated output gradient
with the flipped kernel) well for most layers, but slowly for the layers with few input
channels or a stride. ``fast_conv`` picks, per layer shape, one of three exact formulations of
the forward pass:

- ``patches``: stride 1, kernel > 1x1, <= ``SCATTER_MAX_CHANNELS`` input channels (the
  1-channel stems of the compact backbones): the kh*kw shifted copies of the input stacked as
  channels (im2col), then one 1x1 convolution: 2.1-2.8x faster, bitwise equal here.
- ``subsample``: a strided 1x1 kernel (ResNet shortcuts): the input's every s-th row and column,
  then a 1x1 convolution: no output computed only to be dropped, bitwise equal here.
- ``direct``: ``lax.conv_general_dilated``, for every other layer;

and one of three of the input gradient:

- ``scatter``: stride 1 and <= ``SCATTER_MAX_CHANNELS`` input channels (the stems): one
  matmul of the output gradient with the kernel gives every tap's contribution, the taps are
  summed back in place (col2im). It handles any stride; the selection uses it at stride 1.
- ``polyphase``: strided, kernel > 1, <= ``POLYPHASE_MAX_CHANNELS`` input channels: the
  input gradient splits into stride**2 phases, each a stride-1 convolution with a sub-kernel;
  one convolution computes all phases as channels, then a depth-to-space reshape interleaves
  them. No multiplications by the zeros of the dilated gradient.
- ``dilated``: every other layer, as ``jax.vjp`` would, but with the flipped kernel behind
  ``optimization_barrier`` so XLA:CPU lays it out once instead of taking its slow generic path
  inside loops (jax#12868).

Strided 1x1 kernels keep ``dilated``: the exact alternatives (``scatter``, or a 1x1
convolution of the output gradient with the transposed kernel placed every s-th row and column)
are faster on those layers but round differently, in training at some steps, which would change
every trained default model and every number the README reports. The kernel gradient
(training only) is always the plain convolution's VJP.

``python -m benchmarks.bench_conv_grad`` times the formulations on these layers and whole PGD
steps with and without them (``benchmarks/results/conv_grad.md``); ``python -m
benchmarks.bench_conv_layers`` times every layer of a backbone. All equal the plain convolution
and its VJP up to float rounding (``tests/test_fast_layers.py``); "bitwise equal here" was
measured on this project's AVX-512 CPU with jaxlib 0.10.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Image, kernel and output layouts of every convolution here.
CONV_DIMENSIONS = ("NHWC", "HWIO", "NHWC")

# Input-channel limits of the two special input-gradient formulations (measured on XLA:CPU:
# above them the dilated convolution is as fast or faster).
SCATTER_MAX_CHANNELS = 4
POLYPHASE_MAX_CHANNELS = 16

# torchvision's ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` for convolutions.
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

Padding = tuple[tuple[int, int], tuple[int, int]]


def conv(
    x: jnp.ndarray,
    kernel: jnp.ndarray,
    strides: tuple[int, int],
    padding: Padding,
    lhs_dilation: tuple[int, int] = (1, 1),
) -> jnp.ndarray:
    """Cross-correlation of (B,H,W,I) with (kh,kw,I,O) -> (B,H',W',O)."""
    return lax.conv_general_dilated(
        x, kernel, strides, padding, lhs_dilation=lhs_dilation, dimension_numbers=CONV_DIMENSIONS
    )


def forward_method(kernel_shape: Sequence[int], strides: tuple[int, int]) -> str:
    """``"patches"``, ``"subsample"`` or ``"direct"``: how :func:`fast_conv` runs forward.

    Args:
      kernel_shape: (kh, kw, I, O).
      strides: (sh, sw).
    """
    kh, kw, in_channels, _ = kernel_shape
    if (kh, kw) != (1, 1) and strides == (1, 1) and in_channels <= SCATTER_MAX_CHANNELS:
        return "patches"
    if (kh, kw) == (1, 1) and strides != (1, 1):
        return "subsample"
    return "direct"


def _pad(x: jnp.ndarray, padding: Padding) -> jnp.ndarray:
    """(B,H,W,C) zero-padded (negative pads crop) along H and W as a convolution pads it."""
    (top, bottom), (left, right) = padding
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))


def window_taps(
    padded: jnp.ndarray, kernel_size: tuple[int, int], strides: tuple[int, int], out_size: tuple[int, int]
) -> list[jnp.ndarray]:
    """The kh*kw strided views (B,h,w,C) of padded (B,H,W,C) that a kernel's windows read; view
    ``a*kw + b`` holds tap (a, b) of every one of the h x w windows."""
    (kh, kw), (sh, sw), (rows, cols) = kernel_size, strides, out_size
    return [
        padded[:, a : a + (rows - 1) * sh + 1 : sh, b : b + (cols - 1) * sw + 1 : sw]
        for a in range(kh)
        for b in range(kw)
    ]


def _patches_forward(
    x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: Padding
) -> jnp.ndarray:
    """Convolution as im2col: (B,H,W,I) -> taps (B,H',W',kh*kw*I) -> one 1x1 convolution.

    Channel ``(a*kw + b)*I + i`` of the taps is input channel ``i`` read by tap (a, b), the
    order of ``kernel.reshape(kh*kw*I, O)``.
    """
    kh, kw, in_channels, out_channels = kernel.shape
    padded = _pad(x, padding)
    out_size = tuple(
        (padded.shape[axis + 1] - k) // s + 1 for axis, (k, s) in enumerate(zip((kh, kw), strides))
    )
    taps = jnp.concatenate(window_taps(padded, (kh, kw), strides, out_size), axis=-1)
    return conv(taps, kernel.reshape(1, 1, kh * kw * in_channels, out_channels), (1, 1), ((0, 0), (0, 0)))


def _subsample_forward(
    x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: Padding
) -> jnp.ndarray:
    """Strided 1x1 convolution as im2col, whose one tap is every (sh, sw)-th pixel of the
    padded input, then a 1x1 conv. Only for 1x1 kernels (``forward_method`` picks it for no
    other)."""
    if kernel.shape[:2] != (1, 1):
        raise ValueError(f"subsample forward needs a 1x1 kernel, got {kernel.shape[:2]}")
    return _patches_forward(x, kernel, strides, padding)


FORWARDS: dict[str, Callable[..., jnp.ndarray]] = {
    "patches": _patches_forward,
    "subsample": _subsample_forward,
    "direct": conv,
}


def conv_forward(
    x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: Padding, method: str | None = None
) -> jnp.ndarray:
    """(B,H,W,I) convolved with (kh,kw,I,O) -> (B,H',W',O), formulated per ``method``.

    Args:
      method: a key of ``FORWARDS`` (default: :func:`forward_method`).
    """
    method = forward_method(kernel.shape, strides) if method is None else method
    return FORWARDS[method](x, kernel, strides, padding)


def input_grad_method(kernel_shape: Sequence[int], strides: tuple[int, int]) -> str:
    """A key of ``INPUT_GRADS``: how :func:`fast_conv` differentiates with respect to ``x``.

    Args:
      kernel_shape: (kh, kw, I, O).
      strides: (sh, sw).
    """
    kh, kw, in_channels, _ = kernel_shape
    if in_channels <= SCATTER_MAX_CHANNELS and strides == (1, 1):
        return "scatter"
    if strides != (1, 1) and (kh, kw) != (1, 1) and in_channels <= POLYPHASE_MAX_CHANNELS:
        return "polyphase"
    return "dilated"


def fit(full: jnp.ndarray, offsets: tuple[int, int], size: tuple[int, int]) -> jnp.ndarray:
    """Rows/cols ``offset:offset+size`` of (B,h,w,I), zero-filled where ``full`` is too short."""
    pads = (
        [(0, 0)]
        + [(0, max(0, off + n - full.shape[axis])) for axis, off, n in zip((1, 2), offsets, size)]
        + [(0, 0)]
    )
    full = jnp.pad(full, pads)
    return full[:, offsets[0] : offsets[0] + size[0], offsets[1] : offsets[1] + size[1]]


def col2im(
    tap_values: Callable[[int, int], jnp.ndarray], kernel_size: tuple[int, int], strides: tuple[int, int]
) -> jnp.ndarray:
    """Sums what each window tap receives back where that tap read its input.

    Args:
      tap_values: ``(a, b) -> (B, h, w, C)``: what each of the h x w windows sends to its tap
        (a, b).
      kernel_size: (kh, kw) taps per window.
      strides: (sh, sw) between windows.

    Returns:
      (B, (h-1)*sh + kh, (w-1)*sw + kw, C): position (i*sh + a, j*sw + b) collects tap (a, b)
      of window (i, j), each tap's values placed by one stride-dilated ``lax.pad``.
    """
    (kh, kw), (sh, sw) = kernel_size, strides
    total = 0
    for a in range(kh):
        for b in range(kw):
            values = tap_values(a, b)
            zero = jnp.zeros((), values.dtype)
            total = total + lax.pad(
                values, zero, ((0, 0, 0), (a, kh - 1 - a, sh - 1), (b, kw - 1 - b, sw - 1), (0, 0, 0))
            )
    return total


def _dilated_input_grad(
    grad: jnp.ndarray,
    kernel: jnp.ndarray,
    in_shape: Sequence[int],
    strides: tuple[int, int],
    padding: Padding,
) -> jnp.ndarray:
    """Input gradient as the flipped-kernel convolution of the stride-dilated gradient.

    Along one axis, ``y[o] = sum_k x[o*s + k - lo] w[k]``: dilating ``g`` by ``s`` and
    correlating with the flipped kernel, low padding ``k - 1 - lo``, gives ``dx``; the high
    padding makes the result ``in_size`` long (negative pads crop).
    """
    flipped = lax.optimization_barrier(jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2))
    pads = []
    for axis in (0, 1):
        size, stride, low = kernel.shape[axis], strides[axis], padding[axis][0]
        dilated = (grad.shape[axis + 1] - 1) * stride + 1
        pads.append((size - 1 - low, in_shape[axis + 1] + low - dilated))
    return conv(grad, flipped, (1, 1), tuple(pads), lhs_dilation=strides)


def _scatter_input_grad(
    grad: jnp.ndarray,
    kernel: jnp.ndarray,
    in_shape: Sequence[int],
    strides: tuple[int, int],
    padding: Padding,
) -> jnp.ndarray:
    """Input gradient as per-tap products ``g @ w[a, b]^T`` summed back in place (col2im).

    Tap (a, b) of output (i, j) touched padded input (i*sh + a, j*sw + b): :func:`col2im`
    sums every tap's contribution there, then the padding is cropped.
    """
    kh, kw, in_channels, out_channels = kernel.shape
    rows = grad.reshape(-1, out_channels) @ kernel.reshape(-1, out_channels).T
    taps = rows.reshape(*grad.shape[:3], kh, kw, in_channels)  # (B, H', W', kh, kw, I)
    total = col2im(lambda a, b: taps[:, :, :, a, b], (kh, kw), strides)
    return fit(total, (padding[0][0], padding[1][0]), tuple(in_shape[1:3]))


def _polyphase_input_grad(
    grad: jnp.ndarray,
    kernel: jnp.ndarray,
    in_shape: Sequence[int],
    strides: tuple[int, int],
    padding: Padding,
) -> jnp.ndarray:
    """Input gradient of a strided convolution as one stride-1 convolution over its phases.

    Along one axis, with ``i + lo = q*s + r``: ``dx[i] = sum_j g[q - j] w[j*s + r]``, a full
    convolution of ``g`` with the phase-``r`` sub-kernel ``w[r::s]`` (zero-padded to
    ``ceil(k/s)`` taps). Stacking the s_h*s_w phases as output channels computes all at once;
    position ``q*s + r`` of the interleaved result is input ``q*s + r - lo``.
    """
    kh, kw, in_channels, out_channels = kernel.shape
    (sh, sw), (jh, jw) = strides, (-(-kh // strides[0]), -(-kw // strides[1]))
    padded = jnp.pad(kernel, ((0, jh * sh - kh), (0, jw * sw - kw), (0, 0), (0, 0)))
    phases = padded.reshape(jh, sh, jw, sw, in_channels, out_channels)
    phases = jnp.flip(phases, (0, 2)).transpose(0, 2, 5, 1, 3, 4)
    phases = phases.reshape(jh, jw, out_channels, sh * sw * in_channels)
    out = conv(grad, phases, (1, 1), ((jh - 1, jh - 1), (jw - 1, jw - 1)))
    batch, qh, qw, _ = out.shape
    out = out.reshape(batch, qh, qw, sh, sw, in_channels).transpose(0, 1, 3, 2, 4, 5)
    full = out.reshape(batch, qh * sh, qw * sw, in_channels)
    return fit(full, (padding[0][0], padding[1][0]), tuple(in_shape[1:3]))


INPUT_GRADS: dict[str, Callable[..., jnp.ndarray]] = {
    "scatter": _scatter_input_grad,
    "polyphase": _polyphase_input_grad,
    "dilated": _dilated_input_grad,
}


def conv_input_grad(
    grad: jnp.ndarray,
    kernel: jnp.ndarray,
    in_shape: Sequence[int],
    strides: tuple[int, int],
    padding: Padding,
    method: str | None = None,
) -> jnp.ndarray:
    """Gradient (B,H',W',O) of a convolution's output -> gradient (B,H,W,I) of its input.

    Args:
      grad: (B, H', W', O) output gradient.
      kernel: (kh, kw, I, O).
      in_shape: (B, H, W, I) of the convolution's input.
      strides, padding: the forward convolution's.
      method: a key of ``INPUT_GRADS`` (default: :func:`input_grad_method`).
    """
    method = input_grad_method(kernel.shape, strides) if method is None else method
    return INPUT_GRADS[method](grad, kernel, in_shape, strides, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def fast_conv(x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: Padding) -> jnp.ndarray:
    """``lax.conv_general_dilated`` in NHWC/HWIO, forward and input gradient fast on XLA:CPU.

    Args:
        x: (B, H, W, I) images.
        kernel: (kh, kw, I, O) weights.
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)), explicit ints.

    Returns:
        (B, H', W', O), the plain convolution up to float rounding (:func:`conv_forward`).
    """
    return conv_forward(x, kernel, strides, padding)


def _fast_conv_fwd(x, kernel, strides, padding):
    return conv_forward(x, kernel, strides, padding), (x, kernel)


def _fast_conv_bwd(strides, padding, residuals, grad):
    x, kernel = residuals
    _, kernel_vjp = jax.vjp(lambda k: conv(x, k, strides, padding), kernel)
    return conv_input_grad(grad, kernel, x.shape, strides, padding), kernel_vjp(grad)[0]


fast_conv.defvjp(_fast_conv_fwd, _fast_conv_bwd)


class FastConv(nn.Module):
    """Drop-in for ``nn.Conv`` (explicit padding, no groups) built on :func:`fast_conv`.

    Same variables as ``nn.Conv``: ``kernel`` (kh, kw, I, features) and ``bias`` (features,),
    so checkpoints and torchvision imports are interchangeable. (B,H,W,I) -> (B,H',W',features).

    Attributes:
        features: output channels.
        kernel_size: (kh, kw).
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)).
        use_bias: add a learned bias.
        kernel_init, bias_init: initialisers.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: Padding = ((0, 0), (0, 0))
    use_bias: bool = True
    kernel_init: Callable = KAIMING_FAN_OUT
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, jnp.float32)
        padding = tuple(tuple(int(p) for p in pair) for pair in self.padding)
        y = self.convolve(x, kernel.astype(x.dtype), tuple(self.strides), padding)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y

    @staticmethod
    def convolve(
        x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: Padding
    ) -> jnp.ndarray:
        """(B,H,W,I) convolved with (kh,kw,I,O) -> (B,H',W',O): :func:`fast_conv`."""
        return fast_conv(x, kernel, strides, padding)


class PlainConv(FastConv):
    """``FastConv`` (same fields, same variables) as ``lax.conv_general_dilated`` with ordinary
    autodiff: what XLA's GPU/TPU convolution rewriters recognise (``jaxlogit.backend``)."""

    @staticmethod
    def convolve(
        x: jnp.ndarray, kernel: jnp.ndarray, strides: tuple[int, int], padding: Padding
    ) -> jnp.ndarray:
        """(B,H,W,I) convolved with (kh,kw,I,O) -> (B,H',W',O): :func:`conv`."""
        return conv(x, kernel, strides, padding)
