"""Derived metrics of a :class:`BenchReport`, as a Markdown table or a JSON-ready dict."""

from __future__ import annotations

import dataclasses
import os

import jax

from jaxlogit import attacks, backend
from jaxlogit.bench import _memory, _model
from jaxlogit.bench._run import AttackBench, AttackRun, BenchReport

# The goals: speed-up over torchattacks measured in the same run (C&W: per step).
COMPACT_GOALS = {"pgd": 3.0, "mim": 3.0, "deepfool": 15.0, "cw": 3.0}
IMAGENET_GOALS = {"pgd": 1.2, "mim": 1.2, "deepfool": 50.0}
CW_BUDGET_STEPS = 100  # C&W with its search should cost <= 1.1x this many fwd+grad steps
CW_BUDGET_FACTOR = 1.1

# How jaxlogit's attacks get the weights, by ``BenchConfig.weights_as_constants``.
WEIGHTS_PASSING = {
    False: "program inputs (a partial; new weights reuse the compiled program)",
    True: "constants baked into each compiled program (a closure; --weights-as-constants)",
}


def mib(num_bytes: int | None) -> float | None:
    """Bytes in MiB (None stays None)."""
    return None if num_bytes is None else num_bytes / _memory.MIB


def baseline_peak_mib(report: BenchReport, name: str) -> float | None:
    """Peak memory (MiB) of the baseline call ``name`` (``forward``, ``gradient``,
    ``torch_forward``, ``torch_gradient``), None if not measured."""
    return mib((report.baseline.peak_bytes or {}).get(name))


def run_metrics(run: AttackRun, report: BenchReport) -> dict:
    """Per-implementation numbers; per-step times are for a pass over the full batch B.

    A run on fewer images than B (torchattacks' DeepFool) is extrapolated linearly to B: its
    per-image Python loop costs the same for every image of a batch. Its memory is not
    measured (it would not be the batch's).
    """
    batch = report.model["batch"]
    scale = batch / run.images  # 1 except for the extrapolated runs
    steady = run.timing.best
    flops = run.work.flops(report.baseline.forward_flops, report.baseline.gradient_flops)
    gflops = flops / scale / steady / 1e9
    return {
        "images": run.images,
        "first_call_s": run.timing.first,
        "compile_s": run.timing.compile,
        "steady_s": steady,
        "calls_s": list(run.timing.calls),
        "steady_s_per_batch": steady * scale,
        "images_per_s": run.images / steady,
        "gradient_steps": run.work.gradients,
        "forwards": run.work.forwards,
        "s_per_gradient_step": steady * scale / run.work.gradients if run.work.gradients else None,
        "gflops_per_s": gflops,
        "peak_fraction": gflops / report.peak_gflops,
        "success_rate": run.success,
        "peak_mib": mib(run.peak_bytes),
    }


def compared_per_step(attack: str) -> bool:
    """Whether ``attack``'s speed-up compares time per gradient step rather than per image
    (its torchattacks counterpart does different work, e.g. C&W's has no binary search)."""
    counterpart = attacks.get(attack).torch
    return counterpart is not None and counterpart.per_step


def _work_units(bench: AttackBench, run: AttackRun) -> float:
    """What a speed-up divides time by: images (C&W: gradient steps, per image)."""
    if compared_per_step(bench.attack):
        return run.work.gradients * run.images
    return run.images


def speed_up(bench: AttackBench) -> float | None:
    """jaxlogit's speed-up over torchattacks: images/s ratio (C&W: time-per-step ratio),
    from each side's best time."""
    if bench.torch is None:
        return None
    return (bench.torch.timing.best / _work_units(bench, bench.torch)) / (
        bench.jax.timing.best / _work_units(bench, bench.jax)
    )


def speed_up_range(bench: AttackBench) -> tuple[float, float] | None:
    """(min, max) of the speed-up over the interleaved rounds, each round's two calls paired.

    Calls next to each other in time see similar load from other processes, so the spread
    shows how much the machine's noise moves the ratio.
    """
    if bench.torch is None:
        return None
    scale = _work_units(bench, bench.jax) / _work_units(bench, bench.torch)
    ratios = [theirs / ours * scale for ours, theirs in zip(bench.jax.timing.calls, bench.torch.timing.calls)]
    return min(ratios), max(ratios)


def memory_ratio(bench: AttackBench) -> float | None:
    """jaxlogit's peak memory over torchattacks' for the same batch (< 1: jaxlogit needs less);
    None unless both were measured."""
    if bench.torch is None or bench.torch.peak_bytes is None or bench.jax.peak_bytes is None:
        return None
    return bench.jax.peak_bytes / max(bench.torch.peak_bytes, 1)


def goal(attack: str, report: BenchReport) -> float | None:
    """The issue's speed-up goal for ``attack`` on this arch (None if it sets none)."""
    goals = IMAGENET_GOALS if _model.is_imagenet(report.model["arch"]) else COMPACT_GOALS
    return goals.get(attack)


def cheapest_gradient_step(report: BenchReport) -> float:
    """Seconds of the cheapest forward+input-gradient pass over the batch measured in the run:
    the standalone baseline, or one step inside jaxlogit's compiled PGD or MIM loop (which pays
    the per-call costs once for all its steps, so it is usually the cheaper)."""
    steps = [report.baseline.gradient.best]
    steps += [
        bench.jax.timing.best / bench.jax.work.gradients
        for bench in report.attacks
        if bench.attack in ("pgd", "mim")
    ]
    return min(steps)


def cw_cost_in_steps(report: BenchReport) -> float | None:
    """C&W's steady time over 100 of the cheapest forward+input-gradient steps (goal <= 1.1)."""
    for bench in report.attacks:
        if bench.attack == "cw":
            return bench.jax.timing.best / (CW_BUDGET_STEPS * cheapest_gradient_step(report))
    return None


def as_json(report: BenchReport) -> dict:
    """Raw timings and derived metrics of ``report`` as plain JSON types."""
    baseline = report.baseline
    return {
        "config": dataclasses.asdict(report.config),
        "model": report.model,
        "matmul_peak_gflops": report.peak_gflops,
        "torch_threads": report.torch_threads,
        "load_average_before_after": list(report.load_average),
        "baseline": {
            "forward_s": baseline.forward.best,
            "forward_gradient_s": baseline.gradient.best,
            "forward_gflop": baseline.forward_flops / 1e9,
            "forward_gradient_gflop": baseline.gradient_flops / 1e9,
            "torch_forward_s": baseline.torch_forward and baseline.torch_forward.best,
            "torch_forward_gradient_s": baseline.torch_gradient and baseline.torch_gradient.best,
            "peak_mib": {
                name: baseline_peak_mib(report, name)
                for name in ("forward", "gradient", "torch_forward", "torch_gradient")
            },
        },
        "attacks": {
            bench.attack: {
                "jaxlogit": run_metrics(bench.jax, report),
                "torchattacks": bench.torch and run_metrics(bench.torch, report),
                "speed_up": speed_up(bench),
                "speed_up_range_over_rounds": speed_up_range(bench),
                "memory_ratio": memory_ratio(bench),
                "goal": goal(bench.attack, report),
            }
            for bench in report.attacks
        },
        "cw_cost_in_100_steps": cw_cost_in_steps(report),
    }


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _row(
    attack: str, side: str, metrics: dict, ratio: str, target: str, memory: str, *, compiled: bool
) -> str:
    step = metrics["s_per_gradient_step"]
    compile_s = metrics["compile_s"] if compiled else None
    cells = [
        attack,
        side,
        _number(compile_s, 1),
        _number(metrics["steady_s_per_batch"]),
        _number(metrics["images_per_s"], 1),
        f"{metrics['gradient_steps']:.4g}",
        _number(None if step is None else 1e3 * step, 1),
        _number(metrics["gflops_per_s"], 1),
        _number(100 * metrics["peak_fraction"], 0),
        _number(metrics["success_rate"]),
        ratio,
        target,
        _number(metrics["peak_mib"], 0),
        memory,
    ]
    return "| " + " | ".join(cells) + " |"


def table(report: BenchReport) -> str:
    """The Markdown table: one row per attack and implementation."""
    batch = report.model["batch"]
    lines = [
        f"| attack | impl | compile s | steady s (B={batch}) | images/s | grad steps | "
        "ms/step | GFLOP/s | % peak | success | speed-up | goal | peak MiB | memory |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bench in report.attacks:
        ratio, spread = speed_up(bench), speed_up_range(bench)
        target = goal(bench.attack, report)
        per = " /step" if compared_per_step(bench.attack) else ""
        shown = "—" if ratio is None else f"**{ratio:.2f}x**{per} ({spread[0]:.2f}-{spread[1]:.2f})"
        memory = memory_ratio(bench)
        lines.append(
            _row(
                bench.attack,
                "jaxlogit",
                run_metrics(bench.jax, report),
                shown,
                "—" if target is None else f">= {target:g}x{per}",
                "—" if memory is None else f"{memory:.2f}x",
                compiled=True,
            )
        )
        if bench.torch is not None:
            metrics = run_metrics(bench.torch, report)
            side = (
                "torchattacks"
                if bench.torch.images == batch
                else f"torchattacks ({bench.torch.images} img, x{batch / bench.torch.images:g})"
            )
            lines.append(_row("", side, metrics, "", "", "", compiled=False))
    return "\n".join(lines)


def markdown(report: BenchReport) -> str:
    """The whole report: setup, baselines, the table and notes on how to read it."""
    model, baseline = report.model, report.baseline
    lines = [
        f"## jaxlogit bench: {model['arch']}, batch {model['batch']}, "
        f"input {'x'.join(map(str, model['input_shape']))}",
        "",
        f"- weights: {model['weights']}; jaxlogit's attacks get them as "
        f"{WEIGHTS_PASSING[report.config.weights_as_constants]}",
        f"- jaxlogit computes in {report.config.precision} with the "
        f"{backend.conv_path()!r} convolutions on {jax.default_backend()} "
        f"({jax.devices()[0].device_kind})",
        f"- images: {model['images']}; labels are the "
        "model's own predictions (every sample starts correctly classified)",
        f"- machine: float32 matmul peak {report.peak_gflops:.0f} GFLOP/s (jnp.dot 2048^3, "
        f"this run); torch threads: {report.torch_threads or '—'}; 1-min load average "
        f"{report.load_average[0]:.1f} before, {report.load_average[1]:.1f} after "
        f"({os.cpu_count()} cores)",
        f"- forward {baseline.forward_flops / 1e9:.2f} GFLOP, forward+input gradient "
        f"{baseline.gradient_flops / 1e9:.2f} GFLOP (XLA cost analysis, batch)",
        f"- baseline jaxlogit: forward {baseline.forward.best:.3f} s "
        f"({_mib_text(report, 'forward')}), forward+gradient "
        f"{baseline.gradient.best:.3f} s ({_mib_text(report, 'gradient')})",
    ]
    if baseline.torch_forward is not None:
        lines.append(
            f"- baseline torch: forward {baseline.torch_forward.best:.3f} s "
            f"({_mib_text(report, 'torch_forward')}), forward+gradient "
            f"{baseline.torch_gradient.best:.3f} s "
            f"({_mib_text(report, 'torch_gradient')}); torch twin's "
            f"logits differ from JAX's by at most {model['torch_logits_diff']:.1e}"
        )
    cw = cw_cost_in_steps(report)
    if cw is not None:
        lines.append(
            f"- C&W (4 search steps x 25) costs **{cw:.2f}x** of {CW_BUDGET_STEPS} "
            f"forward+gradient steps at the run's cheapest step, "
            f"{cheapest_gradient_step(report) * 1e3:.1f} ms "
            f"(goal <= {CW_BUDGET_FACTOR})"
        )
    lines += ["", table(report), "", *notes(report)]
    return "\n".join(lines)


def _mib_text(report: BenchReport, name: str) -> str:
    peak = baseline_peak_mib(report, name)
    return "peak memory not measured" if peak is None else f"peak {peak:.0f} MiB"


def notes(report: BenchReport) -> list[str]:
    """How to read the table."""
    out = [
        "Notes: steady = best of the later calls; compile = first call - steady (JAX only). "
        "A gradient step is one forward+input-gradient pass over the batch; DeepFool counts "
        f"one per candidate class per iteration ({attacks.get('deepfool').settings['candidates'] - 1} "
        "candidates for jaxlogit, every class for torchattacks), averaged over the samples "
        "(jaxlogit runs each iteration on the samples not yet fooled only). GFLOP/s use "
        "XLA's FLOP count of the forward and of forward+gradient for both implementations. Speed-up = "
        "images/s ratio (C&W: "
        "time-per-step ratio, since torchattacks' CW has no binary search and stops early) of "
        "the best times; in brackets its range over the interleaved rounds. "
        "Success = re-prediction of the returned images in one batch; torchattacks' "
        "DeepFool applies its overshoot per step and stops right at the boundary, so its "
        "images often fall back to the label when re-predicted. Peak MiB = the highest "
        "resident memory of the process during one more call, above where it stood before "
        "it (both libraries allocate from the C heap; its free pages are handed back to "
        "the kernel first): what the call needs on top of weights and inputs. Memory = "
        "jaxlogit's peak over torchattacks' on the same batch (< 1: jaxlogit needs less)."
    ]
    for bench in report.attacks:
        if bench.torch is not None and bench.torch.images < report.model["batch"]:
            out.append(
                f"torchattacks {bench.attack} was timed on {bench.torch.images} images "
                "only (its per-image Python loop) and extrapolated per image to the batch."
            )
        if bench.attack == "deepfool" and bench.torch is None and report.torch_threads:
            out.append("torchattacks DeepFool was not timed (pass --torch-deepfool-images N).")
    if "random" in report.model["weights"]:
        out.append(
            "Random weights: timings are representative, success rates and DeepFool "
            "iteration counts are not those of a trained model."
        )
    return out
