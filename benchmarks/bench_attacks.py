"""The attacks against torchattacks: compact backbones at batch 256 and resnet50@224 at batch 8.

Runs ``jaxlogit.bench`` once per model in one process (everything timed interleaved with
torchattacks on the same weights and batch) and writes the reports to
``benchmarks/results/attacks.md`` (plus ``attacks.json``). Run from the repository root::

    python -m benchmarks.bench_attacks                     # all attacks, resnet_compact, resnet50
    python -m benchmarks.bench_attacks --imagenet-attacks pgd --repeats 2
    python -m benchmarks.bench_attacks --compact-arch vgg_compact resnet_compact densenet_compact

Expect tens of minutes on 2 CPU cores: resnet50's attacks each compile for a minute or more,
torchattacks' PGD-10 on resnet50 takes ~10 s per call and its DeepFool is timed on a few
compact images only (on resnet50 it is skipped: minutes per image-iteration).
Each compact model uses its newest trained checkpoint in the cache (``--cache``), else random
weights; resnet50 uses torchvision's random weights imported into flax.
"""

from __future__ import annotations

import argparse
import pathlib

from jaxlogit import attacks, bench, paths

RESULTS = pathlib.Path(__file__).parent / "results"


def configs(args: argparse.Namespace) -> list[bench.BenchConfig]:
    """The compact benchmarks (one per ``--compact-arch``), then the resnet50 one."""
    common = {"repeats": args.repeats, "cache": args.cache, "seed": args.seed}
    compact = [
        bench.BenchConfig(arch=arch, attacks=tuple(args.compact_attacks), batch=256, **common)
        for arch in args.compact_arch
    ]
    return compact + [
        bench.BenchConfig(arch="resnet50", attacks=tuple(args.imagenet_attacks), batch=8, **common)
    ]


def main(argv: list[str] | None = None) -> list[bench.BenchReport]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--compact-arch",
        nargs="+",
        default=["resnet_compact"],
        help="compact backbones, each timed at batch 256",
    )
    parser.add_argument(
        "--compact-attacks", nargs="+", default=list(attacks.names()), choices=attacks.names()
    )
    parser.add_argument(
        "--imagenet-attacks", nargs="+", default=list(attacks.names()), choices=attacks.names()
    )
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls (best kept)")
    parser.add_argument("--cache", default=None, help="cache root with trained checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "attacks.md")
    args = parser.parse_args(argv)

    # Every model's timings first, then every memory measurement (which changes how glibc
    # allocates and would slow torch in any timing after it).
    reports = bench.run_many(configs(args), log=lambda message: print(f"... {message}", flush=True))
    for report in reports:
        print(bench.markdown(report), flush=True)
    header = (
        "# Attack benchmarks\n\nWritten by `python -m benchmarks.bench_attacks`; ratios "
        "are measured in the same run, absolute times depend on the machine's load.\n\n"
    )
    paths.write_text_atomic(args.out, header + "\n\n".join(bench.markdown(r) for r in reports) + "\n")
    paths.write_json_atomic(args.out.with_suffix(".json"), [bench.as_json(r) for r in reports])
    print(f"wrote {args.out}")
    return reports


if __name__ == "__main__":
    main()
