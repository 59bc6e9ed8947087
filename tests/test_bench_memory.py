"""The bench's peak-memory measurement (jaxlogit.bench._memory) and how the report uses it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlogit.bench import _attacks, _memory, _report, _run, _timing

MIB = 2**20


@pytest.fixture(autouse=True)
def _needs_a_resettable_peak():
    if not _memory.measurable():
        pytest.skip("peak memory is measured on Linux CPUs only (/proc/self/clear_refs)")


def touched(mib: int):
    """A call that allocates ``mib`` MiB, writes every page, frees it and returns a float."""

    def call():
        block = np.ones(mib * MIB // 8)
        return float(block[-1])

    return call


def test_peak_growth_counts_memory_an_earlier_call_freed_again():
    """glibc keeps a freed 16 MiB block mapped and reuses it unseen; trimming before each
    measurement and fresh blocks make every call count its own 16 MiB."""
    with _memory.fresh_blocks():
        grown = [_memory.peak_growth(touched(16))[0] for _ in range(4)]
    assert all(15 * MIB <= g <= 18 * MIB for g in grown), grown


def test_peak_growth_is_near_zero_for_a_call_that_allocates_nothing():
    with _memory.fresh_blocks():
        assert _memory.peak_growth(lambda: 1.0)[0] < 2 * MIB


def test_peak_growth_sees_a_jax_output_computed_on_xla_threads():
    """A jitted call whose output is 64 MiB: the kernel's peak includes it, measured again and
    again (XLA allocates on its own threads' heaps)."""
    tile = jax.jit(lambda x: jnp.tile(x, 64))
    x = jnp.ones((MIB // 4,), jnp.float32)  # 1 MiB in, 64 MiB out
    tile(x).block_until_ready()
    with _memory.fresh_blocks():
        grown = [_memory.peak_growth(lambda: tile(x))[0] for _ in range(3)]
    assert all(63 * MIB <= g <= 72 * MIB for g in grown), grown


def test_peaks_scale_with_the_allocation():
    peaks = _memory.peaks({"small": touched(8), "large": touched(40)})
    assert 7 * MIB <= peaks["small"] <= 10 * MIB
    assert 39 * MIB <= peaks["large"] <= 43 * MIB


def _run_with(peak_bytes, images=8):
    return _run.AttackRun(_timing.Timing(2.0, 1.0, (1.0,)), _attacks.Work(11, 10), images, 1.0, peak_bytes)


def test_memory_ratio_is_jaxlogits_peak_over_torchattacks_and_needs_both():
    bench = _run.AttackBench("pgd", _run_with(30 * MIB), _run_with(120 * MIB))
    assert _report.memory_ratio(bench) == pytest.approx(0.25)
    assert _report.memory_ratio(bench._replace(torch=None)) is None
    # torchattacks' DeepFool runs on a few images: no memory is measured for it, no ratio.
    few = _run.AttackBench("deepfool", _run_with(30 * MIB), _run_with(None, images=4))
    assert _report.memory_ratio(few) is None


def test_run_many_measures_memory_only_after_every_timing(monkeypatch):
    """Measuring memory changes how glibc allocates for the rest of the process (torch's
    per-operation allocations get slower), so no model may be timed after any memory phase."""
    order = []
    monkeypatch.setattr(_run, "run_timings", lambda config, log: order.append(("time", config)) or config)
    monkeypatch.setattr(_run, "add_memory", lambda timed, log: order.append(("memory", timed)) or timed)
    assert _run.run_many(["a", "b"]) == ["a", "b"]
    assert order == [("time", "a"), ("time", "b"), ("memory", "a"), ("memory", "b")]
