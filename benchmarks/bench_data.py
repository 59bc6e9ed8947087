"""Does the host keep up? JPEG decoding (``data.iter_batches``) per number of worker processes, beside
the attack's and the clean forward pass's images/s on a backbone.

Decodes an ImageNet-format folder (or TFDS data dir) with ``--workers`` processes each, then times
``--attack`` on ``--arch`` with ``jaxlogit.bench`` (random weights unless a checkpoint is cached),
and writes ``benchmarks/results/data.md``. Without ``--data-dir`` it writes a tiny ImageNet of
500x375 JPEGs (smooth colours plus noise, about the size of ImageNet's) into a temporary folder::

    python -m benchmarks.bench_data                                   # tiny folder, resnet50 PGD
    python -m benchmarks.bench_data --data-dir ~/imagenet --workers 0 4 8 15 --attack-batch 128

The host keeps up when the decode rate of the workers you give (``--data-workers``) is at least the
attack's images/s (the clean forward pass, ``predict_classes``, needs far more). Worker start-up
(a fresh Python per worker importing grain and JAX) is reported apart: it is paid once per stream.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np
from PIL import Image

from benchmarks._results import RESULTS, write_report
from jaxlogit import attacks, bench, data
from jaxlogit.data import testing

JPEG_SIZE = (375, 500)  # (H, W): ImageNet's most common shape


def photo_like(rng: np.random.Generator, shape: tuple[int, int] = JPEG_SIZE) -> np.ndarray:
    """uint8 ``(H, W, 3)``: a bicubic blow-up of random colours plus noise (JPEG size like a photo's)."""
    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize(shape[::-1], Image.BICUBIC), np.float32)
    return np.clip(smooth + rng.normal(0, 32, smooth.shape), 0, 255).astype(np.uint8)


def write_tiny_imagenet(root: pathlib.Path, images: int, classes: int = 4) -> pathlib.Path:
    """``root/val/<wnid>/*.JPEG``: ``images`` photo-like JPEGs over the first ``classes`` wnids."""
    rng = np.random.default_rng(0)
    per_class = -(-images // classes)
    folders = {wnid: [photo_like(rng) for _ in range(per_class)] for wnid in data.imagenet_wnids()[:classes]}
    testing.write_image_folder(root, "val", folders)
    return root


def time_decoding(split: data.Split, rows: np.ndarray, batch: int, workers: int) -> dict:
    """Start-up (until the first batch) and steady images/s over the other batches, with ``workers``."""
    start = time.perf_counter()
    first = None
    with data.iter_batches(split, rows, batch, workers=workers) as batches:
        for x, _ in batches:
            if first is None:
                first, after_first = time.perf_counter(), len(rows) - len(x)
    end = time.perf_counter()
    rate = after_first / (end - first) if end > first else float("nan")
    return {"workers": workers, "startup_s": first - start, "images_per_s": rate}


def time_one_core(split: data.Split, rows: np.ndarray) -> float:
    """Images/s of ``split.get_batch`` one image at a time in this thread: one core's decode rate."""
    start = time.perf_counter()
    for row in rows:
        split.get_batch(row[None])
    return len(rows) / (time.perf_counter() - start)


def time_backbone(args: argparse.Namespace) -> dict:
    """The attack's and the clean forward pass's images/s (``jaxlogit.bench``, no torch)."""
    config = bench.BenchConfig(
        arch=args.arch,
        attacks=(args.attack,),
        batch=args.attack_batch,
        repeats=args.repeats,
        cache=args.cache,
        torch=False,
    )
    report = bench.run(config, log=lambda message: print(f"... {message}", flush=True))
    batch = report.model["batch"]
    return {
        "arch": args.arch,
        "attack": args.attack,
        "batch": batch,
        "attack_images_per_s": bench.run_metrics(report.attacks[0].jax, report)["images_per_s"],
        "forward_images_per_s": batch / report.baseline.forward.best,
    }


def markdown(
    split, source: str, rows: int, rounds: int, one_core: float, decode: list[dict], model: dict | None
) -> list[str]:
    """The report: the decode table, then the backbone's rates and whether decoding keeps up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "# Input pipeline: decoding beside the attack",
        "",
        f"Written by `python -m benchmarks.bench_data`. {source}: {len(split)} images, {rows} decoded per "
        f"row, resized and cropped to 224x224 (`data.iter_batches`); best of {rounds} interleaved rounds. "
        f"{cores} usable CPU cores, load average {os.getloadavg()[0]:.1f} at the end: on a shared machine "
        "every rate is a lower bound, and a busy machine shares its cores per thread, not per process.",
        "",
        "| decoding | start-up (s) | images/s | images/s per worker |",
        "|---|---|---|---|",
        f"| one image at a time, this thread | - | {one_core:.1f} | {one_core:.1f} |",
    ]
    for run in decode:
        name = "threads of this process (0 workers)" if run["workers"] == 0 else f"{run['workers']} workers"
        per = run["images_per_s"] / max(run["workers"], 1)
        lines.append(f"| {name} | {run['startup_s']:.1f} | {run['images_per_s']:.1f} | {per:.1f} |")
    if model is None:
        return lines
    best = max(decode, key=lambda run: run["images_per_s"])
    attack, forward = model["attack_images_per_s"], model["forward_images_per_s"]
    verdict = "keeps up with" if best["images_per_s"] >= attack else "does NOT keep up with"
    lines += [
        "",
        f"{model['arch']} at batch {model['batch']}: {attacks.get(model['attack']).label(16 / 255)} "
        f"{attack:.3g} images/s, clean forward pass {forward:.3g} images/s.",
        "",
        f"Decoding with {best['workers']} workers ({best['images_per_s']:.1f} images/s) {verdict} the "
        f"attack ({best['images_per_s'] / attack:.3g}x its rate); the forward pass alone "
        f"(`predict_classes`) needs {forward / max(one_core, 1e-9):.2g} cores of decoding.",
    ]
    return lines


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="ImageNet folder or TFDS dir (default: a tiny one)")
    parser.add_argument("--images", type=int, default=128, help="images decoded per row of the table")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per row (the best is kept)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=None, help="default: 0, 1, default_workers()"
    )
    parser.add_argument("--batch", type=int, default=32, help="images per decoded batch")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--attack", default="pgd", choices=attacks.names())
    parser.add_argument("--attack-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="steady-state attack calls (best kept)")
    parser.add_argument("--cache", default=None, help="cache root with trained checkpoints")
    parser.add_argument("--no-attack", action="store_true", help="time decoding only")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "data.md")
    args = parser.parse_args(argv)
    workers = args.workers or sorted({0, 1, data.default_workers()})

    with tempfile.TemporaryDirectory(prefix="jaxlogit-tiny-imagenet-") as tmp:
        if args.data_dir is None:
            root = write_tiny_imagenet(pathlib.Path(tmp), args.images)
            sizes = [p.stat().st_size for p in root.glob("val/*/*.JPEG")]
            source = (
                f"A tiny ImageNet of {JPEG_SIZE[1]}x{JPEG_SIZE[0]} JPEGs ({np.mean(sizes) / 1e3:.0f} kB each)"
            )
        else:
            root, source = pathlib.Path(args.data_dir), f"`{args.data_dir}`"
        split = data.load("imagenet", "validation", data_dir=root)
        rows = np.arange(args.images) % len(split)
        one_core, best = 0.0, {}
        for _ in range(args.rounds):  # interleaved rounds, the best of each kept: the load varies
            one_core = max(one_core, time_one_core(split, rows[: max(8, args.images // 4)]))
            for count in workers:
                run = time_decoding(split, rows, args.batch, count)
                print(f"... {count} workers: {run}", flush=True)
                kept = best.setdefault(count, run)
                kept["startup_s"] = min(kept["startup_s"], run["startup_s"])
                kept["images_per_s"] = max(kept["images_per_s"], run["images_per_s"])
        decode = list(best.values())
    model = None if args.no_attack else time_backbone(args)
    return write_report(markdown(split, source, len(rows), args.rounds, one_core, decode, model), args.out)


if __name__ == "__main__":
    print(main())
