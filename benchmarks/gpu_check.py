"""The Python stages of ``benchmarks/gpu_check.sh``: devices, matmul peaks, one bench, report.

Each subcommand is one time-boxed stage of the shell script and leaves its results in
``--work`` as JSON, written as soon as they exist (``bench`` after every attack), so a stage
cut off by its time box keeps what it measured so far::

    python -m benchmarks.gpu_check devices --work DIR
    python -m benchmarks.gpu_check peak --work DIR [--size 8192]
    python -m benchmarks.gpu_check bench --work DIR --arch resnet50 --batch 64 --precision bfloat16
    python -m benchmarks.gpu_check report --work DIR --out-dir benchmarks/results [--copy-to $OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import backend, bench
from jaxlogit.bench import _model, _run, _timing


def _write(path: pathlib.Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(path)


def devices(work: pathlib.Path) -> dict:
    """What JAX (and torch, if importable) sees; the convolution path the backend picks."""
    info = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "conv_path": backend.conv_path(),
        "deepfool_chunk": backend.deepfool_chunk(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except ImportError:
        info["torchattacks"] = None
    _write(work / "devices.json", info)
    return info


def matmul_tflops(size: int, dtype, precision: str | None, repeats: int = 10) -> float:
    """Best TFLOP/s of ``(size, size) @ (size, size)`` in ``dtype`` at ``precision``."""
    a = jax.random.normal(jax.random.key(0), (size, size), dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), dtype)
    product = jax.jit(lambda a, b: jnp.dot(a, b, precision=precision))
    timings, _ = _timing.interleaved({"matmul": lambda: product(a, b)}, repeats)
    return 2.0 * size**3 / timings["matmul"].best / 1e12


def peak(work: pathlib.Path, size: int) -> dict:
    """Measured matmul peaks: bfloat16, float32 at XLA's default precision (TF32 on NVIDIA
    GPUs) and at ``highest`` (true float32)."""
    peaks = {
        "size": size,
        "bfloat16_tflops": matmul_tflops(size, jnp.bfloat16, None),
        "float32_default_tflops": matmul_tflops(size, jnp.float32, None),
        "float32_highest_tflops": matmul_tflops(size, jnp.float32, "highest"),
    }
    _write(work / "peak.json", peaks)
    return peaks


def run_bench(
    work: pathlib.Path,
    arch: str,
    batch: int,
    precision: str,
    repeats: int,
    attacks: tuple[str, ...],
    torch: bool,
) -> None:
    """``jaxlogit bench``'s timings (no memory: host RSS says nothing of GPU memory), its JSON
    rewritten after the baselines and after every attack."""
    config = bench.BenchConfig(
        arch=arch, attacks=attacks, batch=batch, repeats=repeats, torch=torch, precision=precision
    )
    path = work / f"bench-{arch}-b{batch}-{precision}.json"
    model = _model.prepare(arch, batch, seed=config.seed, with_torch=config.torch, compute_dtype=precision)
    info = {
        "arch": model.arch,
        "batch": len(model.y),
        "input_shape": list(model.x.shape[1:]),
        "num_classes": model.num_classes,
        "weights": model.weights,
        "images": model.images,
        "torch_logits_diff": model.torch_logits_diff,
    }
    matmul_peak = bench.matmul_peak_gflops()
    baseline, _ = _run.measure_baseline(model, repeats)
    threads = None
    if model.torch_model is not None:
        from jaxlogit.bench import _torch

        threads = _torch.threads()
    benches = []

    def save() -> None:
        report = _run.BenchReport(
            config, info, matmul_peak, threads, baseline, benches, tuple(os.getloadavg()[:2])
        )
        data = bench.as_json(report)
        data["markdown"] = bench.markdown(report)
        _write(path, data)

    save()
    for name in attacks:
        start = time.perf_counter()
        benches.append(_run.measure_attack(name, model, config)[0])
        save()
        print(f"{arch} b{batch} {precision} {name}: {time.perf_counter() - start:.1f} s", flush=True)


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _significant(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def bench_rows(data: dict, peaks: dict) -> list[str]:
    """Table rows of one bench JSON: compile, steady, TFLOP/s and % of the measured peak."""
    config, rows = data["config"], []
    reference = (
        peaks.get("bfloat16_tflops")
        if config["precision"] == "bfloat16"
        else peaks.get("float32_default_tflops")
    )
    for attack, sides in data["attacks"].items():
        for side in ("jaxlogit", "torchattacks"):
            metrics = sides.get(side)
            if not metrics:
                continue
            tflops = metrics["gflops_per_s"] and metrics["gflops_per_s"] / 1e3
            share = reference and tflops and 100 * tflops / reference
            precision = config["precision"] if side == "jaxlogit" else "float32"
            compile_s = metrics["compile_s"] if side == "jaxlogit" else None
            rows.append(
                f"| {attack} | {side} | {data['model']['batch']} | {precision} | "
                f"{_fmt(compile_s, 1)} | {_fmt(metrics['steady_s_per_batch'], 3)} | "
                f"{_fmt(metrics['images_per_s'], 0)} | {_significant(tflops)} | "
                f"{_fmt(share, 1)} | {_fmt(metrics['success_rate'])} | "
                f"{_fmt(side == 'jaxlogit' and sides['speed_up'] or None)} |"
            )
    return rows


def report(work: pathlib.Path, out_dir: pathlib.Path, copy_to: pathlib.Path | None) -> str:
    """``gpu-<gpu>.md`` and ``.json`` from everything the stages left in ``work``."""

    def load(name: str) -> dict:
        path = work / name
        return json.loads(path.read_text()) if path.exists() else {}

    info, peaks = load("devices.json"), load("peak.json")
    stages = (
        [line.split("\t") for line in (work / "stages.tsv").read_text().splitlines()]
        if (work / "stages.tsv").exists()
        else []
    )
    benches = {path.stem: json.loads(path.read_text()) for path in sorted(work.glob("bench-*.json"))}
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", info.get("device_kind", "unknown")).strip("-").lower()
    lines = [
        f"# jaxlogit on {info.get('device_kind', '?')}",
        "",
        "Written by `bash benchmarks/gpu_check.sh` (one call on a fresh machine).",
        "",
        f"- jax {info.get('jax')} on {info.get('backend')}, convolution path "
        f"`{info.get('conv_path')}`, DeepFool chunk {info.get('deepfool_chunk') or 'batch'}; "
        f"torch {info.get('torch')} ({info.get('torch_cuda')}), torchattacks "
        f"{info.get('torchattacks')}",
        f"- measured matmul peak ({peaks.get('size')}^3): bf16 "
        f"{_significant(peaks.get('bfloat16_tflops'))} TFLOP/s, f32 default precision "
        f"{_significant(peaks.get('float32_default_tflops'))}, f32 highest "
        f"{_significant(peaks.get('float32_highest_tflops'))}",
        "",
        "| stage | exit | seconds |",
        "|---|---:|---:|",
        *[f"| {' | '.join(stage)} |" for stage in stages],
        "",
        "Attacks (compile apart; TFLOP/s from XLA's FLOP count of the jaxlogit program, "
        "the same count for torchattacks; % of the measured peak of the precision: bf16, "
        "else f32 at XLA's default precision):",
        "",
        "| attack | impl | batch | precision | compile s | steady s | images/s | TFLOP/s | "
        "% peak | success | speed-up |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for data in benches.values():
        lines += bench_rows(data, peaks)
    for name, data in benches.items():
        lines += ["", f"<details><summary>{name}</summary>", "", data.get("markdown", ""), "", "</details>"]
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"gpu-{gpu}.md", out_dir / f"gpu-{gpu}.json"]
    written[0].write_text(text)
    _write(written[1], {"devices": info, "peak": peaks, "stages": stages, "benches": benches})
    if copy_to:
        copy_to.mkdir(parents=True, exist_ok=True)
    for path in written if copy_to else []:
        shutil.copy(path, copy_to / path.name)
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("devices", "peak", "bench", "report"))
    parser.add_argument("--work", type=pathlib.Path, required=True)
    parser.add_argument("--size", type=int, default=8192, help="peak: matmul size")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--precision", choices=bench.PRECISIONS, default="float32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--attacks", nargs="+", default=list(bench.ATTACKS))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--out-dir", type=pathlib.Path, default=pathlib.Path("benchmarks/results"))
    parser.add_argument("--copy-to", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    if args.stage == "devices":
        print(json.dumps(devices(args.work), indent=1))
    elif args.stage == "peak":
        print(json.dumps(peak(args.work, args.size), indent=1))
    elif args.stage == "bench":
        run_bench(
            args.work,
            args.arch,
            args.batch,
            args.precision,
            args.repeats,
            tuple(args.attacks),
            not args.no_torch,
        )
    else:
        report(args.work, args.out_dir, args.copy_to)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
