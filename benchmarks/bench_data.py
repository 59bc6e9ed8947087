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
import resource
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


def cpu_seconds() -> float:
    """CPU time so far of this process (all threads) and of its child processes that have ended."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def stream(split: data.Split, rows: np.ndarray, batch: int, workers: int) -> tuple[float, float, float]:
    """One ``iter_batches`` stream: seconds to its first batch, seconds after it, and CPU seconds in
    all (this process and the workers, start-up included: they have ended when it returns)."""
    start, cpu_start, first = time.perf_counter(), cpu_seconds(), None
    with data.iter_batches(split, rows, batch, workers=workers) as batches:
        for _ in batches:
            first = first or time.perf_counter()
    return first - start, time.perf_counter() - first, cpu_seconds() - cpu_start


def time_decoding(split: data.Split, rows: np.ndarray, batch: int, workers: int) -> dict:
    """With ``workers``: start-up (until the first batch), images/s after it, and images per
    CPU-second, from the CPU two streams (all rows, half of them) differ by: start-up cancels out."""
    startup, seconds, cpu = stream(split, rows, batch, workers)
    half = len(rows) // 2
    _, _, cpu_half = stream(split, rows[:half], batch, workers)
    return {
        "workers": workers,
        "startup_s": startup,
        "images_per_s": (len(rows) - batch) / seconds,
        "images_per_cpu_s": (len(rows) - half) / max(cpu - cpu_half, 1e-9),
    }


def time_one_core(split: data.Split, rows: np.ndarray) -> dict:
    """Images/s and images per CPU-second of ``split.get_batch`` one image at a time in this thread."""
    start, cpu_start = time.perf_counter(), time.process_time()
    for row in rows:
        split.get_batch(row[None])
    return {
        "images_per_s": len(rows) / (time.perf_counter() - start),
        "images_per_cpu_s": len(rows) / (time.process_time() - cpu_start),
    }


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
    split, source: str, rows: int, rounds: int, one_core: dict, decode: list[dict], model: dict | None
) -> list[str]:
    """The report: the decode table, then the backbone's rates and whether decoding keeps up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "# Input pipeline: decoding beside the attack",
        "",
        f"Written by `python -m benchmarks.bench_data`. {source}: {len(split)} images, {rows} decoded per "
        f"row, resized and cropped to 224x224 (`data.iter_batches`); best of {rounds} round(s). "
        f"{cores} usable CPU cores, load average {os.getloadavg()[0]:.1f} at the end: on a shared machine "
        "images/s are lower bounds (a busy machine shares its cores per thread, not per process); "
        "images per CPU-second (this process and the workers, start-up left out: the CPU of streams "
        "of all and of half the images differ by it) depend little on the load.",
        "",
        "| decoding | start-up (s) | images/s | images/s per worker | images per CPU-second (rough) |",
        "|---|---|---|---|---|",
        f"| one image at a time, this thread | - | {one_core['images_per_s']:.1f} | - | "
        f"{one_core['images_per_cpu_s']:.1f} |",
    ]
    for run in decode:
        name = "threads of this process (0 workers)" if run["workers"] == 0 else f"{run['workers']} worker(s)"
        per = f"{run['images_per_s'] / run['workers']:.1f}" if run["workers"] else "-"
        lines.append(
            f"| {name} | {run['startup_s']:.1f} | {run['images_per_s']:.1f} | {per} | "
            f"{run['images_per_cpu_s']:.1f} |"
        )
    if model is None:
        return lines
    best = max(decode, key=lambda run: run["images_per_s"])
    attack, forward = model["attack_images_per_s"], model["forward_images_per_s"]
    verdict = "keeps up with" if best["images_per_s"] >= attack else "does NOT keep up with"
    per_core = one_core["images_per_cpu_s"]  # the best a worker can do: one core, no hand-over
    lines += [
        "",
        f"{model['arch']} at batch {model['batch']}: {attacks.get(model['attack']).label(16 / 255)} "
        f"{attack:.3g} images/s, clean forward pass {forward:.3g} images/s.",
        "",
        f"Decoding with {best['workers']} workers ({best['images_per_s']:.1f} images/s) {verdict} the "
        f"attack ({best['images_per_s'] / attack:.3g}x its rate). A free core decodes at most "
        f"{per_core:.0f} images/s, so the attack needs at least {attack / per_core:.2g} cores of decoding "
        f"and the forward pass alone (`predict_classes`) {forward / per_core:.2g}: `--data-workers` "
        "should be above that, with room for the hand-over to the main process.",
    ]
    return lines


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="ImageNet folder or TFDS dir (default: a tiny one)")
    parser.add_argument("--images", type=int, default=384, help="images decoded per row of the table")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per row (the best is kept)")
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
        best = {}
        for _ in range(args.rounds):  # interleaved rounds, the best of each kept: the load varies
            runs = [("one core", time_one_core(split, rows[: max(8, args.images // 4)]))]
            runs += [(count, time_decoding(split, rows, args.batch, count)) for count in workers]
            for name, run in runs:
                print(f"... {name}: {run}", flush=True)
                kept = best.setdefault(name, run)
                for key, value in run.items():
                    kept[key] = min(kept[key], value) if key == "startup_s" else max(kept[key], value)
        one_core = best.pop("one core")
        decode = list(best.values())
    model = None if args.no_attack else time_backbone(args)
    return write_report(markdown(split, source, len(rows), args.rounds, one_core, decode, model), args.out)


if __name__ == "__main__":
    print(main())
