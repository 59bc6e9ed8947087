"""``run(config)``: baselines, then each attack in JAX and torchattacks, timed in one run."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

from jaxlogit import _xla, attacks
from jaxlogit.bench import _attacks, _flops, _memory, _model, _timing
from jaxlogit.bench._attacks import Work
from jaxlogit.bench._timing import Timing
from jaxlogit.errors import JaxlogitError

COMPACT_TORCH_DEEPFOOL_IMAGES = 4
PRECISIONS = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to benchmark.

    Attributes:
      arch: a registry name (compact or ImageNet).
      attacks: registered attack names (``jaxlogit.attacks.names()``, the default: all).
      batch: images per attack call (None: 256 compact, 8 ImageNet).
      repeats: steady-state calls per measurement (the best counts).
      seed: seed of random weights, images and PGD's start.
      checkpoint: a trained checkpoint folder (None: newest cached one, else random weights).
      cache: the cache root to look for trained checkpoints in.
      data_dir: where Fashion-MNIST is.
      torch: also time torchattacks when it is importable.
      torch_deepfool_images: images torchattacks' DeepFool is timed on, per-image time then
        extrapolated (None: 4 for compact archs, 0 = not timed for ImageNet archs, where one
        image-iteration takes minutes).
      weights_as_constants: give jaxlogit's attacks a plain closure over the weights, which
        bakes them into each compiled program as constants (a new program per weights, longer
        compiles), instead of the default partial whose weights are program inputs.
      precision: ``"float32"`` or ``"bfloat16"``, jaxlogit's backbone compute dtype (its
        baselines and attacks; torchattacks stays float32).
    """

    arch: str = "resnet_compact"
    attacks: tuple[str, ...] = dataclasses.field(default_factory=attacks.names)
    batch: int | None = None
    repeats: int = 3
    seed: int = 0
    checkpoint: str | None = None
    cache: str | None = None
    data_dir: str | None = None
    torch: bool = True
    torch_deepfool_images: int | None = None
    weights_as_constants: bool = False
    precision: str = "float32"

    def __post_init__(self):
        if not self.attacks:
            raise JaxlogitError(f"no attack to time: pass one of {', '.join(attacks.names())} or all")
        for name in self.attacks:
            _attacks.bench_spec(name)  # unknown, or no work model: a one-line error
        if self.precision not in PRECISIONS:
            raise JaxlogitError(f"unknown precision {self.precision!r}: choose {' or '.join(PRECISIONS)}")
        if self.repeats < 1 or (self.batch is not None and self.batch < 1):
            raise JaxlogitError("repeats and batch must be >= 1: pass --repeats 3 --batch 256")


class Baseline(NamedTuple):
    """One forward and one forward + input gradient of the batch (torch: None without it).

    ``peak_bytes`` maps ``forward``, ``gradient`` (and ``torch_forward``, ``torch_gradient``)
    to the peak memory of one call (``_memory.peak_growth``; None where not measurable).
    """

    forward: Timing
    gradient: Timing
    forward_flops: float
    gradient_flops: float
    torch_forward: Timing | None
    torch_gradient: Timing | None
    peak_bytes: dict | None = None


class AttackRun(NamedTuple):
    """One implementation of one attack: its timing, work, images attacked, success rate and
    the peak memory of one call in bytes (None: not measured)."""

    timing: Timing
    work: Work
    images: int
    success: float
    peak_bytes: int | None = None


class AttackBench(NamedTuple):
    """jaxlogit's and torchattacks' runs of one attack (``torch`` None when not timed)."""

    attack: str
    jax: AttackRun
    torch: AttackRun | None


class BenchReport(NamedTuple):
    """Everything measured in one run; see ``jaxlogit.bench.markdown`` and ``as_json``.

    ``load_average`` is the machine's 1-minute load average before and after the run: other
    processes on the same cores slow both libraries, unevenly.
    """

    config: BenchConfig
    model: dict
    peak_gflops: float
    torch_threads: int | None
    baseline: Baseline
    attacks: list[AttackBench]
    load_average: tuple[float, float]


def _forward(logits_fn, x):
    return logits_fn(x)


def _gradient(logits_fn, x, y):
    return jax.grad(lambda images: attacks.cross_entropy(logits_fn(images), y).sum())(x)


def measure_baseline(model: _model.BenchModel, repeats: int) -> tuple[Baseline, dict]:
    """Times the jitted forward and forward + input gradient (weights as program inputs),
    their torch counterparts, interleaved, and counts their FLOPs with XLA.

    Returns:
      ``(baseline, calls)``: the baseline (no memory yet) and its calls by name, to measure
      their memory after every timing (:func:`measure_memory`).
    """
    forward, gradient = _xla.jit(_forward), _xla.jit(_gradient)
    f, x, y = model.logits_fn, model.x, model.y
    calls = {"forward": lambda: forward(f, x), "gradient": lambda: gradient(f, x, y)}
    if model.torch_model is not None:
        from jaxlogit.bench import _torch

        torch_calls = _torch.baseline_calls(model.torch_model, x, y)
        calls.update({f"torch_{name}": call for name, call in torch_calls.items()})
    timings, _ = _timing.interleaved(calls, repeats)
    baseline = Baseline(
        timings["forward"],
        timings["gradient"],
        _flops.compiled_flops(_forward, f, x),
        _flops.compiled_flops(_gradient, f, x, y),
        timings.get("torch_forward"),
        timings.get("torch_gradient"),
    )
    return baseline, calls


def torch_images(config: BenchConfig, name: str, batch: int) -> int:
    """How many images torchattacks' ``name`` runs on: none without a counterpart, a few
    (extrapolated) for one that loops over the images in Python (DeepFool), else the batch."""
    counterpart = attacks.get(name).torch
    if counterpart is None:
        return 0
    if not counterpart.per_image_loop:
        return batch
    wanted = config.torch_deepfool_images
    if wanted is None:
        wanted = 0 if _model.is_imagenet(config.arch) else COMPACT_TORCH_DEEPFOOL_IMAGES
    return min(wanted, batch)


def attack_logits_fn(model: _model.BenchModel, config: BenchConfig) -> Callable:
    """The ``logits_fn`` jaxlogit's attacks get: the model's partial (weights are program
    inputs) or, with ``weights_as_constants``, a closure over it (weights become constants)."""
    if not config.weights_as_constants:
        return model.logits_fn
    partial = model.logits_fn
    return lambda images: partial(images)


def measure_attack(name: str, model: _model.BenchModel, config: BenchConfig) -> tuple[AttackBench, dict]:
    """Times jaxlogit's ``name`` and, if possible, torchattacks' (interleaved, same weights).

    Returns:
      ``(bench, calls)``: the timings (no memory yet) and the calls whose memory
      :func:`measure_memory` measures later: ``jax``, and ``torch`` when it ran on the whole
      batch (torchattacks' DeepFool runs on a few images, whose memory is not the batch's).
    """
    batch = len(model.y)
    calls = {
        "jax": _attacks.jax_attack(name, attack_logits_fn(model, config), model.x, model.y, seed=config.seed)
    }
    n_torch = torch_images(config, name, batch) if model.torch_model is not None else 0
    counter = None
    if n_torch:
        from jaxlogit.bench import _torch

        counter = _torch.WorkCounter(model.torch_model)
        torch_call = _torch.attack_call(name, model.torch_model, model.x[:n_torch], model.y[:n_torch])
        calls["torch"] = _counted(torch_call, counter)
    try:
        timings, results = _timing.interleaved(calls, config.repeats)
    finally:
        if counter is not None:
            counter.close()
    res = results["jax"]
    jax_run = AttackRun(
        timings["jax"],
        _attacks.jax_work(name, res, model.num_classes),
        batch,
        float(np.mean(np.asarray(res.success))),
    )
    torch_run = None
    if counter is not None:
        success = _torch.success_rate(model.torch_model, results["torch"], model.y[:n_torch])
        torch_run = AttackRun(timings["torch"], counter.work(n_torch), n_torch, success)
    memory_calls = {side: call for side, call in calls.items() if side == "jax" or n_torch == batch}
    return AttackBench(name, jax_run, torch_run), memory_calls


def measure_memory(
    baseline: Baseline, baseline_calls: dict, benches: list[AttackBench], attack_calls: list[dict]
) -> tuple[Baseline, list[AttackBench]]:
    """Peak memory of one more call of everything timed (``_memory.peaks``), run after every
    timing because it changes how glibc allocates. The first JAX call and the first torch call
    after that switch reuse memory glibc kept from before it and would under-count, so the
    cheap forward passes of both run first as unrecorded warm-ups.

    Returns:
      ``baseline`` and ``benches`` with their ``peak_bytes`` filled in.
    """
    warm_ups = {
        f"warm-up {name}": baseline_calls[name]
        for name in ("forward", "torch_forward")
        if name in baseline_calls
    }
    calls = {**warm_ups, **baseline_calls}
    for bench, sides in zip(benches, attack_calls):
        calls.update({f"{bench.attack}/{side}": call for side, call in sides.items()})
    memory = _memory.peaks(calls)
    baseline = baseline._replace(peak_bytes={name: memory[name] for name in baseline_calls})

    def with_memory(bench: AttackBench) -> AttackBench:
        torch_run = bench.torch and bench.torch._replace(peak_bytes=memory.get(f"{bench.attack}/torch"))
        return bench._replace(
            jax=bench.jax._replace(peak_bytes=memory[f"{bench.attack}/jax"]), torch=torch_run
        )

    return baseline, [with_memory(bench) for bench in benches]


def _counted(call: Callable, counter) -> Callable:
    """``call`` with the work counter reset first, so it holds the last call's work."""

    def run():
        counter.reset()
        return call()

    return run


class Timed(NamedTuple):
    """A run's timings (``report``, memory not yet measured) and the calls to measure it with."""

    report: BenchReport
    baseline_calls: dict
    attack_calls: list


def run_timings(config: BenchConfig, *, log: Callable[[str], None] = lambda message: None) -> Timed:
    """Times everything ``config`` describes; :func:`add_memory` measures memory afterwards."""
    load_before = os.getloadavg()[0]
    log(f"preparing {config.arch}")
    model = _model.prepare(
        config.arch,
        config.batch,
        checkpoint=config.checkpoint,
        cache=config.cache,
        data_dir=config.data_dir,
        seed=config.seed,
        with_torch=config.torch,
        compute_dtype=config.precision,
    )
    log("measuring the matmul peak")
    peak = _flops.matmul_peak_gflops()
    log("timing the forward and forward+gradient baselines")
    baseline, baseline_calls = measure_baseline(model, config.repeats)
    benches, attack_calls = [], []
    for name in config.attacks:
        log(f"timing {name}")
        bench, calls = measure_attack(name, model, config)
        benches.append(bench)
        attack_calls.append(calls)
    torch_threads = None
    if model.torch_model is not None:
        from jaxlogit.bench import _torch

        torch_threads = _torch.threads()
    info = {
        "arch": model.arch,
        "batch": len(model.y),
        "input_shape": list(model.x.shape[1:]),
        "num_classes": model.num_classes,
        "weights": model.weights,
        "images": model.images,
        "torch_logits_diff": model.torch_logits_diff,
    }
    report = BenchReport(
        config, info, peak, torch_threads, baseline, benches, (load_before, os.getloadavg()[0])
    )
    return Timed(report, baseline_calls, attack_calls)


def add_memory(timed: Timed, *, log: Callable[[str], None] = lambda message: None) -> BenchReport:
    """``timed.report`` with the peak memory of each timed call. It leaves glibc allocating
    differently (``_memory.fresh_blocks``), which slows torch's allocations: time nothing after
    it in the same process."""
    log(f"measuring peak memory on {timed.report.model['arch']} (one more call of each)")
    baseline, benches = measure_memory(
        timed.report.baseline, timed.baseline_calls, timed.report.attacks, timed.attack_calls
    )
    return timed.report._replace(baseline=baseline, attacks=benches)


def run_many(
    configs: list[BenchConfig], *, log: Callable[[str], None] = lambda message: None
) -> list[BenchReport]:
    """Runs several benchmarks in one process: every timing first, then every memory
    measurement, so none of them is timed after glibc's allocation was changed."""
    timed = [run_timings(config, log=log) for config in configs]
    return [add_memory(one, log=log) for one in timed]


def run(config: BenchConfig, *, log: Callable[[str], None] = lambda message: None) -> BenchReport:
    """Runs the whole benchmark described by ``config``: timings, then peak memory.

    Args:
      config: what to measure.
      log: called with a short progress line before each measurement.

    Returns:
      A :class:`BenchReport` (format it with ``markdown`` or ``as_json``).
    """
    return run_many([config], log=log)[0]
