"""Closed-form Jacobians of the corrector ``relu(z W1 + b1) W2 + b2`` (dropout off).

Per example ``H = W2^T diag(relu'(h)) W1^T`` with ``h = z W1 + b1``: only the hidden units
that are active (``h > 0``) contribute, and after training about half are. Gathering the
active units' rows of ``W1^T`` and ``W2`` and contracting over them does ``C_out * active * C``
multiply-adds instead of the ``2 * C_out * D * C`` of reverse mode over the dense graph.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import batching
from jaxlogit.errors import JaxlogitError
from jaxlogit.explain._jacobian import JACOBIAN_CHUNK_SIZE
from jaxlogit.explain._validate import check_chunk_size, check_logits, is_concrete

WIDTH_BUCKETS = 32
"""The gathered width is rounded up to a multiple of ``D / WIDTH_BUCKETS`` (bounds recompiles)."""

DENSE_ABOVE = 0.9
"""Above this active fraction the gather does not pay; use all D units with a mask."""


def _layer(params: Mapping, name: str) -> tuple[jax.Array, jax.Array]:
    """``(kernel, bias)`` of layer ``name``, or a loud error listing what is there."""
    layer = params.get(name)
    if not isinstance(layer, Mapping) or "kernel" not in layer or "bias" not in layer:
        found = {
            key: sorted(value) if isinstance(value, Mapping) else type(value).__name__
            for key, value in params.items()
        }
        raise JaxlogitError(
            f"corrector params need {name!r} with 'kernel' and 'bias', found {found}; "
            "pass the corrector's params {'hidden': {...}, 'output': {...}} (or {'output': {...}})"
        )
    return jnp.asarray(layer["kernel"]), jnp.asarray(layer["bias"])


def _hidden_width(max_active: int, hidden: int) -> int:
    """Units to gather per example: ``max_active`` rounded up to a bucket, or all of them."""
    step = math.ceil(hidden / WIDTH_BUCKETS)
    width = max(step, math.ceil(max_active / step) * step)
    return hidden if width > DENSE_ABOVE * hidden else width


@jax.jit
def _active_counts(w_in: jax.Array, b_in: jax.Array, z: jax.Array) -> jax.Array:
    return jnp.sum(z @ w_in + b_in > 0, axis=1)


@functools.partial(jax.jit, static_argnums=4)
def _jacobian_chunk(
    w_in: jax.Array, b_in: jax.Array, w_out: jax.Array, z: jax.Array, width: int
) -> jax.Array:
    active = (z @ w_in + b_in) > 0  # (n, D); relu'(0) = 0 as in jax.grad
    w_in_t = w_in.T  # (D, C): gathering rows is contiguous
    contract_units = (((0,), (0,)), ((), ()))

    def one(mask: jax.Array) -> jax.Array:
        if width == w_in.shape[1]:
            rows_out, rows_in = w_out * mask[:, None].astype(w_out.dtype), w_in_t
        else:
            units = jnp.nonzero(mask, size=width, fill_value=0)[0]
            real = (jnp.arange(width) < mask.sum()).astype(w_in.dtype)  # drop fill entries
            rows_out, rows_in = w_out[units], w_in_t[units] * real[:, None]
        return jax.lax.dot_general(rows_out, rows_in, contract_units)  # (C_out, C)

    return jax.lax.map(one, active)


def two_layer_jacobian(params: Mapping, z: jax.Array, *, chunk_size: int = JACOBIAN_CHUNK_SIZE) -> jax.Array:
    """Jacobians of the corrector in closed form, over active hidden units only.

    Equals ``explain.jacobian`` of ``Corrector.apply({"params": params}, z, deterministic=True)``
    (up to float rounding) and is several times faster for ``D >> C``. Outside ``jit`` the
    number of gathered units is the batch's largest active count, rounded up to one of
    ``WIDTH_BUCKETS`` sizes (few compilations); above ``DENSE_ABOVE * D`` and under ``jit``
    all ``D`` units are used with a mask. A single-layer corrector (params with only
    ``"output"``) has the constant Jacobian ``W^T``.

    Args:
      params: ``{"hidden": {"kernel" (C, D), "bias" (D,)}, "output": {"kernel" (D, C_out),
        "bias" (C_out,)}}``, or only ``"output"`` with kernel ``(C, C_out)``; a
        ``{"params": ...}`` variables dict is unwrapped.
      z: logits ``(B, C)``.
      chunk_size: examples per compiled chunk.

    Returns:
      ``H`` of shape ``(B, C_out, C)``, ``H[b, i, k] = d g(z_b)_i / d z_b,k``.

    Raises:
      JaxlogitError: if ``params`` lacks the layers, has more hidden layers (``depth`` > 1: use
        ``explain.jacobian``) or ``z`` does not match their shapes.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlogit import explain
      >>> params = {"hidden": {"kernel": jnp.array([[1.0, -1.0], [0.0, 1.0]]), "bias": jnp.zeros(2)},
      ...           "output": {"kernel": jnp.array([[2.0, 0.0], [0.0, 3.0]]), "bias": jnp.zeros(2)}}
      >>> explain.two_layer_jacobian(params, jnp.array([[1.0, 0.0]]))[0].tolist()  # unit 1 off
      [[2.0, 0.0], [0.0, 0.0]]
    """
    if "params" in params and "output" not in params:
        params = params["params"]
    z = check_logits(z)
    check_chunk_size(chunk_size)
    w_out, _ = _layer(params, "output")
    if "hidden_2" in params:
        raise JaxlogitError(
            "two_layer_jacobian takes a corrector with one hidden layer, these params have more "
            "(depth > 1); use explain.jacobian(trained.g_fn(), z)"
        )
    if "hidden" not in params:
        _check_inputs(z, w_out.shape[0])
        return jnp.broadcast_to(w_out.T, (z.shape[0],) + w_out.T.shape)
    w_in, b_in = _layer(params, "hidden")
    _check_inputs(z, w_in.shape[0])
    if w_out.shape[0] != w_in.shape[1]:
        raise JaxlogitError(
            f"hidden kernel {w_in.shape} and output kernel {w_out.shape} disagree on D; pass one "
            "corrector's params"
        )
    width = w_in.shape[1]
    if is_concrete(z) and is_concrete(w_in) and z.shape[0] > 0:
        count_fn = functools.partial(_active_counts, w_in, b_in)
        counts = batching.map_batches(count_fn, z, batch_size=256, pad="pow2", on_device=True)
        if is_concrete(counts):  # not when z is a constant closed over by an outer jit
            width = _hidden_width(int(np.max(counts)), w_in.shape[1])

    def chunk_fn(z_chunk):
        return _jacobian_chunk(w_in, b_in, w_out, z_chunk, width)

    return batching.map_batches(chunk_fn, z, batch_size=chunk_size, pad="pow2", on_device=True)


def _check_inputs(z: jax.Array, num_in: int) -> None:
    if z.shape[1] != num_in:
        raise JaxlogitError(
            f"z has {z.shape[1]} classes but the corrector takes {num_in}; pass logits of the backbone it "
            "was trained on"
        )
