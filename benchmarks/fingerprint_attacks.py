"""Fingerprints of every attack's output on the compact backbones, to compare two commits.

    python -m benchmarks.fingerprint_attacks > after.txt
    git stash / git checkout OLD; python -m benchmarks.fingerprint_attacks > before.txt
    diff before.txt after.txt        # empty: the refactor is bitwise neutral on this CPU

Random-init backbones (key 0), 16 uniform images (key 1) labelled by the model, PGD-3 (key 2; and
with one key per image, ``fold_in(key 2, i)``, as the logit stores draw them), MIM-3, DeepFool and
C&W-L2 (2 x 10 steps); each line is the SHA-256 prefix of the result's
``x_adv, logits, norm, success, iterations`` bytes. Fingerprints differ between CPUs (XLA sums
in another order), so compare runs on one machine.
"""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import attacks, models

ARCHS = ("resnet_compact", "vgg_compact", "densenet_compact")


def fingerprint(result: attacks.AttackResult) -> str:
    """The first 16 hex digits of the SHA-256 of every field of ``result``."""
    digest = hashlib.sha256()
    for array in (result.x_adv, result.logits, result.norm, result.success, result.iterations):
        digest.update(np.asarray(array).tobytes())
    return digest.hexdigest()[:16]


def attack_results(f, x, y) -> dict[str, attacks.AttackResult]:
    """The four attacks with small settings on ``f``, images ``x`` (B, H, W, C), labels ``y`` (B,)."""
    return {
        "deepfool": attacks.deepfool(f, x, y),
        "cw": attacks.cw_l2(f, x, y, steps=10, search_steps=2),
        "pgd": attacks.pgd(f, x, y, key=jax.random.key(2), steps=3),
        "mim": attacks.mim(f, x, y, steps=3),
        "pgd_per_image": attacks.pgd(
            f, x, y, key=attacks.sample_keys(jax.random.key(2), jnp.arange(len(y))), steps=3
        ),
    }


def main() -> None:
    for arch in ARCHS:
        spec = models.spec(arch)
        module = models.create(arch)
        variables = models.init(module, jax.random.key(0), spec.input_shape)
        f = models.logits_fn(module, variables, mean=spec.mean, std=spec.std)
        x = jax.random.uniform(jax.random.key(1), (16, *spec.input_shape))
        y = jnp.argmax(f(x), -1)
        for name, result in attack_results(f, x, y).items():
            print(arch, name, fingerprint(result), flush=True)


if __name__ == "__main__":
    main()
