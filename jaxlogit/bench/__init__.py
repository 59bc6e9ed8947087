"""Benchmarks of the attacks: compile time, steady state, FLOP/s and torchattacks in one run.

Example:
    >>> from jaxlogit import bench
    >>> config = bench.BenchConfig(arch="resnet_compact", attacks=("pgd",))
    >>> report = bench.run(config)  # doctest: +SKIP
    >>> print(bench.markdown(report))  # doctest: +SKIP

Everything is measured in the same process and the torchattacks calls are interleaved with
jaxlogit's, so ratios stay meaningful on a shared machine even when absolute times are noisy.
The attacks are the registered ones (``jaxlogit.attacks.names()``), with the settings, work
models and torchattacks counterparts of their ``AttackSpec``.
"""

from jaxlogit.bench._attacks import Work, jax_attack, jax_work
from jaxlogit.bench._flops import compiled_flops, matmul_peak_gflops
from jaxlogit.bench._model import BenchModel, default_batch, prepare
from jaxlogit.bench._report import as_json, cw_cost_in_steps, markdown, run_metrics, speed_up, speed_up_range
from jaxlogit.bench._run import (
    PRECISIONS,
    AttackBench,
    AttackRun,
    Baseline,
    BenchConfig,
    BenchReport,
    run,
    run_many,
)
from jaxlogit.bench._timing import Timing, interleaved

__all__ = [
    "PRECISIONS",
    "AttackBench",
    "AttackRun",
    "Baseline",
    "BenchConfig",
    "BenchModel",
    "BenchReport",
    "Timing",
    "Work",
    "as_json",
    "compiled_flops",
    "cw_cost_in_steps",
    "default_batch",
    "interleaved",
    "jax_attack",
    "jax_work",
    "markdown",
    "matmul_peak_gflops",
    "prepare",
    "run",
    "run_many",
    "run_metrics",
    "speed_up",
    "speed_up_range",
]
