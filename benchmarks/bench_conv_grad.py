"""What the input-gradient formulations and the XLA options buy: PGD steps, four ways, one run.

For each model, ``attacks.pgd`` with ``--steps`` steps (no random start), inside one outer jit,
is compiled four ways and timed interleaved:

- XLA's defaults (YNNPACK convolutions) or ``jaxlogit._xla.CONV_OPTIONS`` (Eigen convolutions);
- every input gradient as the dilated convolution ``jax.vjp`` derives, or the per-layer choice of
  ``jaxlogit.models._conv.input_grad_method`` (scatter / polyphase / dilated).

It also times each input-gradient formulation alone on the layers where they differ. Ratios
are against the first variant in the same run. Run from the repository root::

    python -m benchmarks.bench_conv_grad                        # resnet_compact b256, resnet50 b8
    python -m benchmarks.bench_conv_grad --arch resnet_compact --repeats 5

Writes ``benchmarks/results/conv_grad.md``. The compact model uses the newest trained
checkpoint in the cache (``--cache``), else random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import pathlib
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import _xla, attacks
from jaxlogit.bench import _model, _timing
from jaxlogit.models import _conv

RESULTS = pathlib.Path(__file__).parent / "results"

# (label, jaxlogit's XLA options?, per-layer input gradients?)
VARIANTS = (
    ("XLA defaults, dilated input gradients", False, False),
    ("XLA defaults, per-layer input gradients", False, True),
    ("Eigen convolutions, dilated input gradients", True, False),
    ("Eigen convolutions, per-layer input gradients (jaxlogit)", True, True),
)

# (input shape, kernel shape, stride, padding) of the layers whose input gradient is special.
LAYERS = {
    "resnet_compact": [((256, 28, 28, 1), (3, 3, 1, 16), 1, 1),
                       ((256, 28, 28, 16), (3, 3, 16, 16), 2, 1),
                       ((256, 14, 14, 16), (3, 3, 16, 32), 2, 1)],
    "resnet50": [((8, 224, 224, 3), (7, 7, 3, 64), 2, 3)],
}


@contextlib.contextmanager
def dilated_only(enabled: bool) -> Iterator[None]:
    """While tracing inside, every layer's input gradient is the dilated convolution."""
    saved = _conv.SCATTER_MAX_CHANNELS, _conv.POLYPHASE_MAX_CHANNELS
    if enabled:
        _conv.SCATTER_MAX_CHANNELS = _conv.POLYPHASE_MAX_CHANNELS = 0
    try:
        yield
    finally:
        _conv.SCATTER_MAX_CHANNELS, _conv.POLYPHASE_MAX_CHANNELS = saved


def pgd_program(logits_fn: Callable, steps: int) -> Callable:
    """(x (B,H,W,C), y (B,)) -> jaxlogit's PGD images; the attack's own jit nests in the caller's."""
    def run(x, y):
        return attacks.pgd(logits_fn, x, y, key=jax.random.key(0), steps=steps,
                           random_start=False).x_adv
    return run


def compiled_variants(model: _model.BenchModel, steps: int) -> dict[str, Callable[[], object]]:
    """One compiled PGD program per variant, as no-argument calls."""
    x, y = jnp.asarray(model.x), jnp.asarray(model.y)
    calls = {}
    for label, tuned, per_layer in VARIANTS:
        jit = _xla.jit if tuned else jax.jit
        jax.clear_caches()  # attacks.pgd's jit would reuse its trace from the previous variant
        with dilated_only(not per_layer):
            program = jit(pgd_program(model.logits_fn, steps)).lower(x, y).compile()
        calls[label] = lambda program=program: program(x, y)
    return calls


def layer_calls(shape, kernel_shape, stride, pad) -> dict[str, Callable[[], object]]:
    """Each input-gradient formulation of one layer, compiled with jaxlogit's options."""
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=kernel_shape) * 0.1, jnp.float32)
    padding = ((pad, pad), (pad, pad))
    out = jax.eval_shape(lambda a: _conv.conv(a, kernel, (stride, stride), padding),
                         jax.ShapeDtypeStruct(shape, jnp.float32))
    grad = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    calls = {}
    for method in _conv.INPUT_GRADS:
        fn = _xla.jit(lambda g, method=method: _conv.conv_input_grad(
            g, kernel, shape, (stride, stride), padding, method=method))
        calls[method] = lambda fn=fn: fn(grad)
    return calls


def model_table(arch: str, steps: int, repeats: int, cache: str | None) -> list[str]:
    model = _model.prepare(arch, cache=cache, with_torch=False)
    timings, _ = _timing.interleaved(compiled_variants(model, steps), repeats)
    base = timings[VARIANTS[0][0]].best
    rows = [f"### {arch}, batch {len(model.y)}: {steps} PGD steps ({model.weights})", "",
            "| variant | ms per step | speed-up |", "|---|---:|---:|"]
    for label, *_ in VARIANTS:
        steady = timings[label].best
        rows.append(f"| {label} | {steady / steps * 1e3:.1f} | {base / steady:.2f}x |")
    return rows


def layers_table(arch: str, repeats: int) -> list[str]:
    rows = ["", f"Input gradient of single layers ({arch}, jaxlogit's XLA options, ms):", "",
            "| input | kernel | stride | " + " | ".join(_conv.INPUT_GRADS) + " | chosen |",
            "|---|---|---:|" + "---:|" * (len(_conv.INPUT_GRADS) + 1)]
    for shape, kernel_shape, stride, pad in LAYERS.get(arch, []):
        timings, _ = _timing.interleaved(layer_calls(shape, kernel_shape, stride, pad), repeats)
        cells = " | ".join(f"{timings[m].best * 1e3:.1f}" for m in _conv.INPUT_GRADS)
        chosen = _conv.input_grad_method(kernel_shape, (stride, stride))
        rows.append(f"| {shape} | {kernel_shape} | {stride} | {cells} | {chosen} |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["resnet_compact", "resnet50"])
    parser.add_argument("--steps", type=int, default=None,
                        help="PGD steps per program (default 10; 2 for resnet50)")
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls (best kept)")
    parser.add_argument("--cache", default=None, help="cache root with trained checkpoints")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "conv_grad.md")
    args = parser.parse_args(argv)
    lines = ["# Input gradients on XLA:CPU", "",
             "Written by `python -m benchmarks.bench_conv_grad`; variants timed interleaved in "
             "one run, best of the steady-state calls.", ""]
    for arch in args.arch:
        steps = args.steps or (2 if _model.is_imagenet(arch) else 10)
        lines += model_table(arch, steps, args.repeats, args.cache)
        lines += layers_table(arch, args.repeats) + [""]
        print("\n".join(lines), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
