"""Peak memory of logit extraction and corrector training at 10,000 and 60,000 rows.

    python -m benchmarks.memory_flat            # a few minutes on two CPU cores

Each case runs in a process of its own, which reports its peak resident set (``VmHWM``) and
its resident set once jax is set up and the inputs are ready (the baseline). Cases:

* **extract**: ``pipeline.ensure_logits`` on the first N Fashion-MNIST training images with a
  random-init ``resnet_compact`` (memory does not depend on the weights) and PGD of one step;
* **train**: ``corrector.train`` (D = 256, one epoch) from a synthetic logit store of
  ImageNet's shape (N x 1,000 classes, clean and adversarial float32 logits);
* **train, whole arrays**: the same from the store's arrays read whole into memory, as
  training read a store before it streamed: the reference that shows what is not flat.

Flat means peak(60k) / peak(10k) <= 1.2; the per-row cost is the slope
(peak(60k) - peak(10k)) / 50,000. Writes ``benchmarks/results/memory_flat.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks import _results

ROWS = (10_000, 60_000)
CLASSES = 1000  # ImageNet's logits
CASES = ("extract", "train", "train_whole")
TITLES = {
    "extract": "logit extraction (Fashion-MNIST, resnet_compact, PGD-1)",
    "train": "corrector training from the store",
    "train_whole": "corrector training from whole arrays (reference, not flat)",
}
FLAT = 1.2


def memory_kib() -> dict[str, int]:
    """This process's resident set now (``VmRSS``) and its peak (``VmHWM``), KiB."""
    fields = dict(line.split(":", 1) for line in pathlib.Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def synthetic_rows(start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``[start, stop)`` of a store of ImageNet's shape: logits peaked at the label."""
    rng = np.random.default_rng(start)
    n = stop - start
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    clean = rng.normal(size=(n, CLASSES)).astype(np.float32)
    clean[np.arange(n), labels] += 4.0
    return {
        "clean_logits": clean,
        "adv_logits": np.roll(clean, 1, axis=1),
        "labels": labels,
        "success": np.ones(n, bool),
        "norm": np.zeros(n, np.float32),
    }


def synthetic_store(directory: pathlib.Path, rows: int):
    from jaxlogit import store

    return store.build(
        directory, rows, synthetic_rows, shard_size=2000, config={"synthetic": CLASSES}, progress=False
    )


def run_extract(rows: int, workdir: pathlib.Path) -> dict:
    import jax

    from jaxlogit import data, models, pipeline, training

    module = models.create("resnet_compact")
    variables = models.init(module, jax.random.key(0), models.spec("resnet_compact").input_shape)
    models.save_checkpoint(workdir / "resnet_compact", "resnet_compact", variables)
    backbone = training.load_backbone(workdir / "resnet_compact")
    split = data.load("fashion_mnist", "train")
    baseline = memory_kib()["VmRSS"]
    attack = pipeline.AttackConfig("pgd", steps=1)
    pipeline.ensure_logits(backbone, attack, split, "train", limit=rows, cache=workdir, progress=False)
    return {"baseline": baseline}


def run_train(rows: int, workdir: pathlib.Path, whole: bool) -> dict:
    import jax

    from jaxlogit import corrector, store

    opened = store.open(workdir / f"store-{rows}")
    source = {key: opened[key] for key in ("clean_logits", "adv_logits", "labels")} if whole else opened
    baseline = memory_kib()["VmRSS"]
    corrector.train(
        source,
        num_classes=CLASSES,
        hidden=256,
        epochs=1,
        batch_size=256,
        key=jax.random.key(0),
        progress=False,
    )
    return {"baseline": baseline}


def child(case: str, rows: int, workdir: pathlib.Path) -> None:
    """Runs one case and prints its memory as one JSON line."""
    if case == "extract":
        out = run_extract(rows, workdir)
    else:
        out = run_train(rows, workdir, whole=case == "train_whole")
    print(json.dumps({**out, "peak": memory_kib()["VmHWM"]}))


def measure(case: str, rows: int, workdir: pathlib.Path) -> dict:
    """Runs ``case`` in a fresh process; its baseline and peak resident set, KiB."""
    command = [sys.executable, "-m", "benchmarks.memory_flat", "--child", case, str(rows), str(workdir)]
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{case} at {rows} rows failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def commit() -> str:
    """The commit measured (``+dirty`` when the work tree has changes)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(pathlib.Path(__file__).parent), *args], capture_output=True, text=True
        )
        return done.stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def table(results: dict[str, dict[int, dict]], sizes: tuple[int, int]) -> list[str]:
    """The markdown table: peak and baseline per size, ratio, per-row cost."""
    small, large = sizes
    lines = [
        f"| case | peak {small // 1000}k MiB | peak {large // 1000}k MiB | ratio | flat (<= {FLAT}) "
        f"| per-row KiB | baseline {small // 1000}k / {large // 1000}k MiB |",
        "|---|---:|---:|---:|:---:|---:|---:|",
    ]
    for case, by_rows in results.items():
        a, b = by_rows[small], by_rows[large]
        ratio = b["peak"] / a["peak"]
        per_row = (b["peak"] - a["peak"]) / (large - small)
        lines.append(
            f"| {TITLES[case]} | {a['peak'] / 1024:.0f} | {b['peak'] / 1024:.0f} | {ratio:.2f} "
            f"| {'yes' if ratio <= FLAT else 'no'} | {per_row:.2f} "
            f"| {a['baseline'] / 1024:.0f} / {b['baseline'] / 1024:.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> str | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("CASE", "ROWS", "WORKDIR"), help=argparse.SUPPRESS)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--rows", nargs=2, type=int, default=list(ROWS), help="the two sizes compared")
    parser.add_argument("--out", type=pathlib.Path, default=_results.RESULTS / "memory_flat.md")
    args = parser.parse_args(argv)
    if args.child:
        case, rows, workdir = args.child
        return child(case, int(rows), pathlib.Path(workdir))
    sizes = tuple(args.rows)
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="memory_flat-") as tmp:
        workdir = pathlib.Path(tmp)
        if any(case.startswith("train") for case in args.cases):
            for rows in sizes:
                synthetic_store(workdir / f"store-{rows}", rows)
        for case in args.cases:
            results[case] = {}
            for rows in sizes:
                results[case][rows] = measure(case, rows, workdir)
                print(case, rows, results[case][rows], flush=True)
    lines = [
        "# Peak memory against the number of rows",
        "",
        f"Written by `python -m benchmarks.memory_flat` at commit {commit()}: peak resident set "
        "(`VmHWM`) of one process per case; baseline = resident set once jax is set up and the inputs "
        f"are open; per-row KiB = slope between {sizes[0]:,} and {sizes[1]:,} rows. Synthetic stores "
        f"have {CLASSES} classes (ImageNet's shape: {8 * CLASSES / 1024:.1f} KiB of logits per row).",
        "",
        *table(results, sizes),
    ]
    return _results.write_report(lines, args.out)


if __name__ == "__main__":
    report = main()
    if report is not None:
        print(report)
