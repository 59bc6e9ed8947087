"""One step of Algorithm 1: mix clean and adversarial logits, cross-entropy, coupled-L2 Adam."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlogit.corrector._module import Corrector

Batch = dict[str, jax.Array]  # {"clean_logits" (B,C), "adv_logits" (B,C), "labels" (B,) int32}


class CorrectorState(NamedTuple):
    """Everything training carries from step to step (a pytree; orbax saves it as is).

    Attributes:
      step: number of steps taken, int32 scalar; it picks each step's randomness.
      params: the corrector's params.
      opt_state: the optimizer's state.
    """

    step: jax.Array
    params: Any
    opt_state: Any


def corrector_optimizer(
    learning_rate: float = 5e-5, weight_decay: float = 1e-4
) -> optax.GradientTransformation:
    """Adam with *coupled* L2 weight decay, as ``torch.optim.Adam(weight_decay=...)``.

    torch adds ``weight_decay * param`` to the gradient before the Adam moments, so the decay
    is rescaled by Adam like any gradient (unlike AdamW, which decays after Adam).
    """
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
        optax.scale(-learning_rate),
    )


def init_state(params: Any, optimizer: optax.GradientTransformation) -> CorrectorState:
    """The state before the first step."""
    return CorrectorState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def mix_batch(
    clean: jax.Array, adv: jax.Array, *, key: jax.Array, p_clean: float
) -> tuple[jax.Array, jax.Array]:
    """Algorithm 1's input: each example is its clean logits with probability ``p_clean``.

    Args:
      clean: clean logits (B, C).
      adv: adversarial logits of the same images (B, C).
      key: the step's key.
      p_clean: probability of taking the clean logits (the paper: 0.3).

    Returns:
      ``(z, is_clean)``: the mixed logits (B, C) and which rows are clean (B,) bool.
    """
    is_clean = jax.random.bernoulli(key, p_clean, (clean.shape[0],))
    return jnp.where(is_clean[:, None], clean, adv), is_clean


def make_train_step(
    module: Corrector, optimizer: optax.GradientTransformation, *, p_clean: float = 0.3
) -> Callable[[CorrectorState, Batch, jax.Array], tuple[CorrectorState, dict]]:
    """A pure ``train_step(state, batch, key) -> (state, metrics)``.

    The step's randomness is ``fold_in(key, state.step)``, split into the mixing key and the
    dropout key, so a run is reproducible from ``key`` alone and a resumed run repeats it.
    ``metrics`` holds scalars: ``loss`` (mean softmax cross-entropy on the true labels),
    ``accuracy`` (on the mixed batch, with dropout) and ``clean_fraction``.
    """

    def loss_fn(params, z, labels, dropout_key):
        out = module.apply({"params": params}, z, deterministic=False, rngs={"dropout": dropout_key})
        loss = optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()
        return loss, out

    def train_step(state: CorrectorState, batch: Batch, key: jax.Array) -> tuple[CorrectorState, dict]:
        mix_key, dropout_key = jax.random.split(jax.random.fold_in(key, state.step))
        z, is_clean = mix_batch(batch["clean_logits"], batch["adv_logits"], key=mix_key, p_clean=p_clean)
        (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, z, batch["labels"], dropout_key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            "accuracy": jnp.mean(jnp.argmax(out, -1) == batch["labels"]),
            "clean_fraction": jnp.mean(is_clean),
        }
        return CorrectorState(state.step + 1, params, opt_state), metrics

    return train_step
