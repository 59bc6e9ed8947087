"""``logits_fn``: a backbone as a pure function of [0, 1] images, normalisation inside."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlogit.errors import JaxlogitError


@dataclasses.dataclass(frozen=True)
class NormalisedEval:
    """``(variables, x) -> logits``: normalise x with mean/std, apply the module in eval mode.

    Hashable and compared by value, so equal architectures share one compiled function.
    With ``compute_dtype`` (a dtype name, e.g. ``"bfloat16"``) the normalised images and the
    floating variables are cast to it and the logits back to the images' dtype.
    """

    module: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    compute_dtype: str | None = None

    def __call__(self, variables: dict, x: jax.Array) -> jax.Array:
        """Images (B, H, W, C) in [0, 1] -> logits (B, num_classes) of x's dtype."""
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        if self.compute_dtype is None:
            return self.module.apply(variables, (x - mean) / std, train=False)
        normalised = ((x - mean) / std).astype(self.compute_dtype)
        variables = cast_floating(variables, self.compute_dtype)
        return self.module.apply(variables, normalised, train=False).astype(x.dtype)


def cast_floating(tree, dtype) -> dict:
    """``tree`` with its floating-point leaves cast to ``dtype`` (a no-op where they are)."""
    return jax.tree.map(
        lambda leaf: leaf.astype(dtype) if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf, tree
    )


def compute_dtype_name(compute_dtype) -> str | None:
    """None for float32 or None (the default path), else the dtype's name; unknown or
    non-floating dtypes raise ``JaxlogitError``."""
    if compute_dtype is None:
        return None
    try:
        dtype = jnp.dtype(compute_dtype)
    except TypeError:
        dtype = None
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise JaxlogitError(
            f"compute_dtype={compute_dtype!r} is not a float dtype: "
            "pass jnp.bfloat16, jnp.float16 or jnp.float32"
        )
    return None if dtype == jnp.float32 else dtype.name


def logits_fn(
    module: nn.Module, variables: dict, *, mean: Sequence[float], std: Sequence[float], compute_dtype=None
) -> jax.tree_util.Partial:
    """The backbone as ``f(x) -> logits`` for images in [0, 1], in eval mode.

    ``f(x)`` maps (B, H, W, C) float32 in [0, 1] to logits (B, num_classes): it subtracts
    ``mean``, divides by ``std`` (per channel) and applies ``module`` with BatchNorm's running
    statistics and dropout off.

    ``f`` is a ``jax.tree_util.Partial`` (``functools.partial(apply, variables)``): a pytree
    whose leaves are the variables. Pass it as an *argument* of a jitted function
    (``jax.jit(attack)(f, x, y)``) and the weights are traced inputs, not constants baked into
    the compiled program (slow to compile for 100M-parameter models), and two ``f`` of the same
    architecture reuse one compilation. ``jax.jit(f)`` also works but embeds the weights.

    Args:
        module: a flax backbone from :func:`jaxlogit.models.create`.
        variables: its ``{"params": ..., "batch_stats": ...}``.
        mean: per-channel mean, length C (e.g. ``spec.mean``).
        std: per-channel std, length C, all > 0.
        compute_dtype: opt-in reduced precision, e.g. ``jnp.bfloat16``: the backbone runs in it
          (variables cast once here, normalised images cast per call) and its logits come
          back as float32; the images, and an attack's perturbation and projection, stay
          float32. None or float32: full precision.
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != len(std) or not mean or min(std) <= 0:
        raise JaxlogitError(
            f"bad normalisation mean={mean} std={std}: give one mean and one "
            "positive std per channel (e.g. models.spec(name).mean/.std)"
        )
    dtype = compute_dtype_name(compute_dtype)
    if dtype is not None:
        variables = cast_floating(variables, dtype)
    return jax.tree_util.Partial(NormalisedEval(module, mean, std, dtype), variables)
