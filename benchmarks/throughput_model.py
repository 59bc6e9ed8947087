"""How long the paper's full ImageNet run takes on N devices: arithmetic from measured costs.

    nice python -m benchmarks.throughput_model [--devices 1,8,64] [--utilisation 0.4]

Measured here: FLOPs per image of one forward and of one forward + input gradient of each
ImageNet backbone at 224 px (XLA's cost analysis of the compiled programs, random weights), and
the seconds one CPU core takes to decode and transform one 500x375 JPEG
(``data._transforms.decode_and_transform``, PIL). Assumed, and printed as such: the device's
peak dense FLOP/s, the fraction of it the attacks reach, the host cores per device, DeepFool's
mean steps per image. Each stage's time is ``images x FLOPs per image / (devices x peak x
utilisation)``; the decode of its images runs on the hosts' cores alongside, and the stage
takes the longer of the two. Written to ``benchmarks/results/throughput_model.md``.
"""

from __future__ import annotations

import dataclasses
import io
import time

import click
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from benchmarks import _results
from jaxlogit import models
from jaxlogit.attacks._builtin import CW, DEEPFOOL, MIM, PGD
from jaxlogit.attacks._work import Work, step_work
from jaxlogit.bench import _flops
from jaxlogit.data import _transforms

ARCHS = ("vgg16_bn", "resnet50", "densenet121")
ATTACKS = ("pgd", "mim", "deepfool", "cw")  # the paper's four
TRAIN_IMAGES = 1_281_167
VAL_IMAGES = 50_000
NUM_CLASSES = 1000
CORRECTOR_HIDDEN = 10_000
CORRECTOR_EPOCHS = 50


@dataclasses.dataclass(frozen=True)
class Device:
    """A kind of accelerator: peak dense FLOP/s (vendor's figures) and the host cores beside each."""

    name: str
    peak_flops: dict
    host_cores: int


# NVIDIA H200 SXM datasheet, dense (without sparsity): TF32 tensor cores (what XLA:GPU uses for
# float32 convolutions and matrix products at JAX's default precision) and BF16. An 8-GPU node
# has about 112 host cores: 14 per GPU.
H200 = Device("NVIDIA H200 SXM", {"float32 (TF32)": 494e12, "bfloat16": 989e12}, host_cores=14)
UTILISATION = 0.4
"""Assumed share of the peak the attacks reach (convolution backward passes, small batches)."""
DEEPFOOL_MEAN_STEPS = 3.0
"""Assumed mean DeepFool steps per ImageNet image (it stops when the label flips; 2-3 typical)."""


def attack_work(name: str) -> Work:
    """Passes over a batch of one attack with the paper's settings, plus the clean forward that
    the logit store records (``pipeline.attack_program``)."""
    if name == "deepfool":
        candidates = DEEPFOOL["candidates"]
        steps = DEEPFOOL_MEAN_STEPS
        work = Work(forwards=min(steps + 1, DEEPFOOL["max_iter"]) + 2, gradients=steps * (candidates - 1))
    else:
        steps = {"pgd": PGD["steps"], "mim": MIM["steps"], "cw": CW["steps"] * CW["search_steps"]}[name]
        work = step_work(steps)
    return work._replace(forwards=work.forwards + 1)


def stage_seconds(
    images: float, flops_per_image: float, devices: int, peak: float, utilisation: float
) -> float:
    """Seconds of a stage: ``images x flops_per_image / (devices x peak x utilisation)``."""
    return images * flops_per_image / (devices * peak * utilisation)


def decode_seconds(decodes: float, seconds_per_decode: float, cores: int) -> float:
    """Seconds to decode ``decodes`` JPEGs on ``cores`` cores."""
    return decodes * seconds_per_decode / cores


def corrector_flops_per_example(num_classes: int = NUM_CLASSES, hidden: int = CORRECTOR_HIDDEN) -> float:
    """One training step's FLOPs per example of the C -> D -> C corrector: forward 2 x (C D + D C),
    backward twice that."""
    return 3 * 2 * (num_classes * hidden + hidden * num_classes)


def backbone_flops(arch: str, batch: int = 2) -> tuple[float, float]:
    """``(forward, forward + input gradient)`` FLOPs per image of ``arch`` at 224 px (XLA)."""
    spec = models.spec(arch)
    module = models.create(arch)
    f = models.logits_fn(
        module, models.init(module, jax.random.key(0), spec.input_shape), mean=spec.mean, std=spec.std
    )
    x = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.float32)
    y = jnp.zeros((batch,), jnp.int32)

    def loss(images):
        return -jnp.take_along_axis(jax.nn.log_softmax(f(images)), y[:, None], axis=1).sum()

    return _flops.compiled_flops(f, x) / batch, _flops.compiled_flops(jax.value_and_grad(loss), x) / batch


def jpeg_decode_seconds(repeats: int = 50) -> float:
    """Best-of seconds to decode and transform one 500x375 JPEG (quality 90) on one core."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 500)[None, :, None] * np.ones((375, 1, 3))
    pixels = np.clip(ramp + rng.normal(0, 30, (375, 500, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    encoded = buffer.getvalue()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        _transforms.decode_and_transform(encoded)
        best = min(best, time.perf_counter() - start)
    return float(best)


def hours(seconds: float) -> str:
    """``seconds`` as hours with two decimals."""
    return f"{seconds / 3600:.2f}"


def report(flops: dict, decode: float, device: Device, devices: list[int], utilisation: float) -> list[str]:
    """The arithmetic as Markdown lines."""
    names = ATTACKS
    lines = [
        "Measured (this machine, XLA cost analysis, 224 px, per image):",
        "",
        "| backbone | forward GFLOP | forward+gradient GFLOP | "
        + " | ".join(f"{n} GFLOP (fwd, grad passes)" for n in names)
        + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    per_backbone = {}
    for arch, (fwd, grad) in flops.items():
        cells = []
        per_backbone[arch] = 0.0
        for name in names:
            work = attack_work(name)
            total = work.flops(fwd, grad)
            per_backbone[arch] += total
            cells.append(f"{total / 1e9:.0f} ({work.forwards:g}, {work.gradients:g})")
        lines.append(f"| {arch} | {fwd / 1e9:.1f} | {grad / 1e9:.1f} | " + " | ".join(cells) + " |")
    attack_flops = sum(per_backbone.values())
    stores = len(flops) * len(names)
    corrector = corrector_flops_per_example() * CORRECTOR_EPOCHS * TRAIN_IMAGES * stores
    lines += [
        "",
        f"JPEG decode + resize 256 + crop 224 of a 500x375 JPEG: {decode * 1e3:.1f} ms per image "
        "on one core.",
        "",
        "Assumptions:",
        "",
        f"- {device.name}, peak dense "
        + ", ".join(f"{k} {v / 1e12:.0f} TFLOP/s" for k, v in device.peak_flops.items())
        + f"; {utilisation:.0%} of it reached; {device.host_cores} host cores per device decoding JPEGs.",
        f"- DeepFool takes {DEEPFOOL_MEAN_STEPS:g} steps per image on average (9 gradients per step).",
        f"- Every store decodes its images again ({stores} stores per split).",
        f"- Correctors {NUM_CLASSES}->{CORRECTOR_HIDDEN}->{NUM_CLASSES}, {CORRECTOR_EPOCHS} epochs on each "
        f"store's {TRAIN_IMAGES:,} training logits; a training step is 3 forwards.",
        "",
        f"Work: training logits {TRAIN_IMAGES:,} x {attack_flops / 1e12:.2f} TFLOP (4 attacks x 3 "
        f"backbones) = {TRAIN_IMAGES * attack_flops:.3g} FLOP; validation {VAL_IMAGES:,} x the same = "
        f"{VAL_IMAGES * attack_flops:.3g} FLOP; correctors {stores} x {CORRECTOR_EPOCHS} epochs x "
        f"{TRAIN_IMAGES:,} x {corrector_flops_per_example() / 1e6:.0f} MFLOP = {corrector:.3g} FLOP.",
        "",
        "| precision | devices | training logits h (decode h) | validation logits h (decode h) "
        "| correctors h | total h |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for precision, peak in device.peak_flops.items():
        for n in devices:
            cores = n * device.host_cores
            train = stage_seconds(TRAIN_IMAGES, attack_flops, n, peak, utilisation)
            train_decode = decode_seconds(TRAIN_IMAGES * stores, decode, cores)
            val = stage_seconds(VAL_IMAGES, attack_flops, n, peak, utilisation)
            val_decode = decode_seconds(VAL_IMAGES * stores, decode, cores)
            fit = stage_seconds(1, corrector, n, peak, utilisation)
            total = max(train, train_decode) + max(val, val_decode) + fit
            lines.append(
                f"| {precision} | {n} | {hours(train)} ({hours(train_decode)}) | {hours(val)} "
                f"({hours(val_decode)}) | {hours(fit)} | {hours(total)} |"
            )
    return lines


@click.command()
@click.option("--devices", default="1,8,64", show_default=True, help="Device counts to tabulate.")
@click.option("--utilisation", type=float, default=UTILISATION, show_default=True)
def main(devices: str, utilisation: float) -> None:
    flops = {}
    for arch in ARCHS:
        flops[arch] = backbone_flops(arch)
        print(arch, [f"{v / 1e9:.2f} GFLOP" for v in flops[arch]], flush=True)
    decode = jpeg_decode_seconds()
    lines = [
        "# Throughput model: the paper's full ImageNet run on N devices",
        "",
        f"Written by `python -m benchmarks.throughput_model` at commit {_results.commit()}, "
        f"JAX {jax.__version__} (FLOPs from backend `{jax.default_backend()}`). A stage takes images x "
        "FLOP per image / (devices x peak x utilisation), or its JPEG decoding on the hosts' cores if "
        "longer. Estimates, not measurements.",
        "",
        *report(flops, decode, H200, [int(n) for n in devices.split(",")], utilisation),
    ]
    print("\n".join(lines))
    _results.write_report(lines, _results.RESULTS / "throughput_model.md")


if __name__ == "__main__":
    main()
