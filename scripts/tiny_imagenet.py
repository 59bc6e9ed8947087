"""Writes a tiny ImageNet in the real layouts and converted torchvision weights, for trying the
ImageNet code paths without ImageNet (needs the `torch` extra).

    python scripts/tiny_imagenet.py OUT
    jaxlogit info --data-dir OUT/data --weights-dir OUT/weights

OUT/data/{train,val}/<wnid>/*.JPEG for the first ``--classes`` real wnids (images of several
sizes), and OUT/weights/resnet50: torchvision's ResNet-50 with random weights (seed 0), saved
as a ``.pth`` state_dict and converted with ``jaxlogit convert``.
"""

from __future__ import annotations

import pathlib

import click
import numpy as np

from jaxlogit import data
from jaxlogit.cli import main as jaxlogit_main
from jaxlogit.data import testing

SIZES = ((375, 500), (80, 60), (256, 256))


def random_images(rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` uint8 RGB images, cycling through ``SIZES`` (H, W)."""
    return [rng.integers(0, 256, (*SIZES[i % len(SIZES)], 3), dtype=np.uint8) for i in range(count)]


@click.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--classes", type=click.IntRange(2, 1000), default=4, show_default=True)
@click.option("--train-per-class", type=click.IntRange(1), default=5, show_default=True)
@click.option("--val-per-class", type=click.IntRange(1), default=3, show_default=True)
def write(out, classes, train_per_class, val_per_class) -> None:
    """Write the tiny ImageNet and the converted ResNet-50 into OUT."""
    import torch
    import torchvision

    root = pathlib.Path(out)
    rng = np.random.default_rng(0)
    wnids = data.imagenet_wnids()[:classes]
    for folder, per_class in (("train", train_per_class), ("val", val_per_class)):
        testing.write_image_folder(root / "data", folder, {w: random_images(rng, per_class) for w in wnids})
    torch.manual_seed(0)
    pth = root / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), pth)
    jaxlogit_main(
        ["convert", "--arch", "resnet50", "--weights", str(pth), "--out", str(root / "weights" / "resnet50")]
    )


if __name__ == "__main__":
    write()
