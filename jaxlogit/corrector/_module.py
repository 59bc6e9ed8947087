"""The corrector network g: logits in, corrected logits out."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlogit.errors import JaxlogitError


class Corrector(nn.Module):
    """C -> D (ReLU, dropout) -> C, or C -> C when ``hidden`` is None (the paper's ablation);
    with ``depth`` L, C -> D -> ... -> D -> C: L hidden layers of width D, each ReLU + dropout.

    Params: ``{"hidden": {"kernel" (C, D), "bias" (D,)}, "output": {"kernel" (D, C), "bias" (C,)}}``,
    plus ``"hidden_2"``, ..., ``"hidden_L"`` (``{"kernel" (D, D), "bias" (D,)}``) when ``depth`` L > 1;
    the single-layer variant has only ``{"output": {"kernel" (C, C), "bias" (C,)}}``.

    Attributes:
      num_classes: C, the number of logits in and out.
      hidden: D, the hidden width (the paper: 10,000), or None for a single linear layer.
      keep_prob: probability that dropout keeps a hidden unit (training only).
      depth: L, the number of hidden layers (the paper: 1); must be 1 when ``hidden`` is None.

    Raises:
      JaxlogitError: ``depth`` is not an integer >= 1, or is not 1 without a hidden layer.
    """

    num_classes: int
    hidden: int | None = 10_000
    keep_prob: float = 0.5
    depth: int = 1

    def __post_init__(self):
        check_depth(self.hidden, self.depth)
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Corrects logits.

        Args:
          z: logits (B, C).
          deterministic: False applies dropout and needs the rng stream ``"dropout"``.

        Returns:
          Corrected logits (B, C).
        """
        for layer in range(self.depth if self.hidden is not None else 0):
            z = nn.relu(nn.Dense(self.hidden, name=hidden_layer_name(layer))(z))
            if not deterministic and self.keep_prob < 1.0:
                z = byte_dropout(z, self.keep_prob, key=self.make_rng("dropout"))
        return nn.Dense(self.num_classes, name="output")(z)


def hidden_layer_name(layer: int) -> str:
    """The param name of hidden layer ``layer`` (0-based): ``hidden``, then ``hidden_2``, ``hidden_3``, ..."""
    return "hidden" if layer == 0 else f"hidden_{layer + 1}"


def check_depth(hidden: int | None, depth: int) -> None:
    """Raises a one-line ``JaxlogitError`` unless ``depth`` is an integer >= 1 (1 if ``hidden`` is None)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise JaxlogitError(f"corrector depth={depth!r}: pass the number of hidden layers, an integer >= 1")
    if hidden is None and depth != 1:
        raise JaxlogitError(
            f"corrector depth={depth} needs hidden layers; pass a width D (--hidden D), or depth 1 "
            "for the single-layer C -> C corrector"
        )


def byte_dropout(h: jax.Array, keep_prob: float, *, key: jax.Array) -> jax.Array:
    """Inverted dropout whose mask uses 8 random bits per unit instead of 32.

    ``nn.Dropout`` draws a 32-bit uniform per unit; at (256, 10,000) that draw costs ~10x the
    rest of the training step on a CPU. Here each 32-bit threefry word gives four units a byte
    each, and a unit is kept when its byte is below ``round(256 * keep_prob)``: the keep
    probability is ``keep_prob`` rounded to a multiple of 1/256 (0.5 is exact), and kept units
    are scaled by its inverse so the expectation is unchanged.

    Args:
      h: activations (B, D).
      keep_prob: probability of keeping a unit, in [1/256, 1].
      key: the dropout key.

    Returns:
      (B, D) activations, dropped units zero.
    """
    threshold = round(256 * keep_prob)
    if not 1 <= threshold <= 256:
        raise ValueError(f"keep_prob must be in [1/256, 1], got {keep_prob}")
    batch, width = h.shape
    words = jax.random.bits(key, (batch, -(-width // 4)), jnp.uint32)
    random_bytes = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(batch, -1)[:, :width]
    keep = random_bytes.astype(jnp.int32) < threshold
    return jnp.where(keep, h * (256.0 / threshold), 0.0).astype(h.dtype)


def init_params(module: Corrector, *, key: jax.Array) -> dict:
    """Fresh params for ``module`` (see ``Corrector`` for the layout), from a cached jitted init."""
    return _jitted_init(module)(key)


@functools.cache
def _jitted_init(module: Corrector) -> Callable[[jax.Array], dict]:
    shape = (1, module.num_classes)
    return jax.jit(lambda key: module.init(key, jnp.zeros(shape, jnp.float32))["params"])


def module_from_params(params: dict, keep_prob: float = 0.5) -> Corrector:
    """The ``Corrector`` whose parameters have the shapes (and hidden layers) of ``params``."""
    num_classes = params["output"]["kernel"].shape[1]
    hidden = params["hidden"]["kernel"].shape[1] if "hidden" in params else None
    depth = 1
    while hidden_layer_name(depth) in params:
        depth += 1
    return Corrector(num_classes=num_classes, hidden=hidden, keep_prob=keep_prob, depth=depth)
