"""Peak memory per image of each attack program on the ImageNet backbones, from XLA (compiled, not run).

    nice python -m benchmarks.attack_memory [--archs resnet50] [--attacks pgd,cw]

For each backbone (random weights, ``models.init`` seed 0: no download) and attack, the attack
program of ``pipeline.attack_program`` is compiled for two probe batches and XLA's memory analysis
gives ``fixed + per_image x B`` (``pipeline.attack_memory_fit``; ``fixed`` includes the weights the
program holds as constants). The table also gives the cheap jaxpr bound
(``batch_fit.jaxpr_bound_bytes``) over XLA's figure at the larger probe batch (>= 1: the bound
held), and the batch ``--attack-batch auto`` picks for a few free-memory sizes. Written to
``benchmarks/results/attack_memory.md`` with the commit and the JAX backend.
"""

from __future__ import annotations

import time

import click
import jax

from benchmarks import _results
from jaxlogit import batch_fit, models, pipeline

ARCHS = ("resnet50", "vgg16_bn", "densenet121")
ATTACKS = ("pgd", "mim", "deepfool", "cw")
FREE_GB = (16, 24, 80, 141)
MB = 1e6


def measure(arch: str, attack_name: str) -> dict:
    """The memory line, the bound's ratio and the compile seconds of one backbone x attack."""
    spec = models.spec(arch)
    module = models.create(arch)
    f = models.logits_fn(
        module, models.init(module, jax.random.key(0), spec.input_shape), mean=spec.mean, std=spec.std
    )
    attack = pipeline.AttackConfig(attack_name)
    start = time.perf_counter()
    fit = pipeline.attack_memory_fit(f, attack, spec.input_shape)
    seconds = time.perf_counter() - start
    program = pipeline.attack_program(f, attack)
    probe = max(batch_fit.PROBE_BATCHES)
    bound = batch_fit.jaxpr_bound_bytes(program.trace(*pipeline._attack_specs(probe, spec.input_shape)).jaxpr)
    return {"fit": fit, "bound_ratio": bound / fit.bytes_for(probe), "seconds": seconds}


def rows(arch: str, attack_name: str, result: dict) -> str:
    """One Markdown row of the table for ``measure``'s ``result``."""
    fit = result["fit"]
    budgets = [batch_fit.MEMORY_SHARE * gb * 1e9 for gb in FREE_GB]
    chosen = [batch_fit.largest_fitting(fit, b, pipeline.DEFAULT_ATTACK_BATCH) or 0 for b in budgets]
    return (
        f"| {arch} | {attack_name} | {fit.per_image_bytes / MB:.1f} | {fit.fixed_bytes / MB:.0f} | "
        f"{fit.bytes_for(pipeline.DEFAULT_ATTACK_BATCH) / 1e9:.1f} | {result['bound_ratio']:.1f} | "
        + " | ".join(str(c) for c in chosen)
        + f" | {result['seconds']:.0f} |"
    )


@click.command()
@click.option("--archs", default=",".join(ARCHS), show_default=True)
@click.option("--attacks", "attack_names", default=",".join(ATTACKS), show_default=True)
def main(archs: str, attack_names: str) -> None:
    lines = [
        "# Attack memory per image (XLA memory analysis, compiled not run)",
        "",
        f"Written by `python -m benchmarks.attack_memory` at commit {_results.commit()}, "
        f"JAX {jax.__version__} on backend `{jax.default_backend()}` ({jax.devices()[0].device_kind}); "
        "224x224 inputs, random weights. Peak = fixed + per image x B, fitted on probe batches "
        f"{batch_fit.PROBE_BATCHES}; fixed includes the weights held as constants. bound/XLA: the cheap "
        "jaxpr bound over XLA's figure at the larger probe (>= 1: it held). auto @ N GB: the batch "
        f"`--attack-batch auto` picks with N GB free ({batch_fit.MEMORY_SHARE:.0%} of it used, cap "
        f"{pipeline.DEFAULT_ATTACK_BATCH}). XLA:GPU's figures differ (other fusions and algorithms); the "
        "chooser reads the device's own.",
        "",
        "| backbone | attack | MB per image | fixed MB | GB at B=250 | bound/XLA | "
        + " | ".join(f"auto @ {gb} GB" for gb in FREE_GB)
        + " | probe compile s |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(FREE_GB) + "---:|",
    ]
    for arch in archs.split(","):
        for attack_name in attack_names.split(","):
            lines.append(rows(arch, attack_name, measure(arch, attack_name)))
            _results.write_report(lines, _results.RESULTS / "attack_memory.md")  # each row as it comes


if __name__ == "__main__":
    main()
