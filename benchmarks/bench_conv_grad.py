"""What the per-layer convolution formulations and the XLA options buy: PGD steps, several ways.

For each model, ``attacks.pgd`` with ``--steps`` steps (no random start), inside one outer jit,
is compiled four ways (five for the ImageNet models) and timed interleaved:

- XLA's defaults (YNNPACK convolutions) or ``jaxlogit._xla.CONV_OPTIONS`` (Eigen convolutions);
- every convolution as ``lax.conv_general_dilated`` and its input gradient as the dilated
  convolution ``jax.vjp`` derives, or the per-layer choices of
  ``jaxlogit.models._conv.forward_method`` (patches / subsample / direct) and
  ``input_grad_method`` (scatter / polyphase / dilated);
- ImageNet stems' overlapping 3x3 max-pool differentiated by ``nn.max_pool``'s
  ``select_and_scatter`` or by ``jaxlogit.models._pool.max_pool_windows``.

It also times each input-gradient formulation alone on the layers where they differ, and the
two max-pools alone. Ratios are against the first variant in the same run. Run from the
repository root::

    python -m benchmarks.bench_conv_grad                        # resnet_compact b256, resnet50 b8
    python -m benchmarks.bench_conv_grad --arch resnet_compact --repeats 5

Writes ``benchmarks/results/conv_grad.md``. The compact model uses the newest trained
checkpoint in the cache (``--cache``), else random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _results
from jaxlogit import _xla, attacks
from jaxlogit.bench import _model, _timing
from jaxlogit.models import _conv, _pool

# (label, jaxlogit's XLA options?, per-layer formulations?, jaxlogit's max-pool gradient?)
VARIANTS = (
    ("XLA defaults, plain convolutions and VJPs", False, False, False),
    ("XLA defaults, per-layer formulations", False, True, False),
    ("Eigen convolutions, plain convolutions and VJPs", True, False, False),
    ("Eigen convolutions, per-layer formulations", True, True, False),
)
POOL_VARIANT = ("Eigen convolutions, per-layer formulations, max-pool gradient", True, True, True)
POOL_LAYER = (8, 112, 112, 64)  # ResNet-50's / DenseNet-121's stem pool input at batch 8

# (input shape, kernel shape, stride, padding) of the layers whose input gradient is special.
LAYERS = {
    "resnet_compact": [
        ((256, 28, 28, 1), (3, 3, 1, 16), 1, 1),
        ((256, 28, 28, 16), (3, 3, 16, 16), 2, 1),
        ((256, 14, 14, 16), (3, 3, 16, 32), 2, 1),
        ((256, 28, 28, 16), (1, 1, 16, 16), 2, 0),
    ],
    "resnet50": [((8, 224, 224, 3), (7, 7, 3, 64), 2, 3), ((8, 56, 56, 256), (1, 1, 256, 512), 2, 0)],
}


@contextlib.contextmanager
def plain_convolutions(enabled: bool) -> Iterator[None]:
    """While tracing inside, every convolution is ``lax``'s and its input gradient the dilated one."""
    saved = _conv.forward_method, _conv.input_grad_method
    if enabled:
        _conv.forward_method = lambda kernel_shape, strides: "direct"
        _conv.input_grad_method = lambda kernel_shape, strides: "dilated"
    try:
        yield
    finally:
        _conv.forward_method, _conv.input_grad_method = saved


def with_max_pool(logits_fn: jax.tree_util.Partial, own_pool: bool) -> jax.tree_util.Partial:
    """``logits_fn`` whose backbone pools with jaxlogit's ``max_pool`` or with ``nn.max_pool``
    (``select_and_scatter``): its ``max_pool`` field, the plain path's pool of
    ``jaxlogit.backend``."""
    evaluate = logits_fn.func
    pool = _pool.max_pool if own_pool else _pool.select_and_scatter_max_pool
    module = evaluate.module.clone(max_pool=pool)
    return jax.tree_util.Partial(dataclasses.replace(evaluate, module=module), *logits_fn.args)


def variants(arch: str) -> tuple[tuple[str, bool, bool, bool], ...]:
    """The compact models have no overlapping max-pool: the pool variant only for ImageNet's."""
    return VARIANTS + (POOL_VARIANT,) if _model.is_imagenet(arch) else VARIANTS


def pgd_program(logits_fn: Callable, steps: int) -> Callable:
    """(x (B,H,W,C), y (B,)) -> jaxlogit's PGD images (the attack's jit nests in the caller's)."""

    def run(x, y):
        return attacks.pgd(logits_fn, x, y, key=jax.random.key(0), steps=steps, random_start=False).x_adv

    return run


def compiled_variants(model: _model.BenchModel, steps: int) -> dict[str, Callable[[], object]]:
    """One compiled PGD program per variant, as no-argument calls."""
    x, y = jnp.asarray(model.x), jnp.asarray(model.y)
    calls = {}
    for label, tuned, per_layer, own_pool in variants(model.arch):
        jit = _xla.jit if tuned else jax.jit
        jax.clear_caches()  # attacks.pgd's jit would reuse its trace from the previous variant
        with plain_convolutions(not per_layer):
            program = jit(pgd_program(with_max_pool(model.logits_fn, own_pool), steps)).lower(x, y).compile()
        calls[label] = lambda program=program: program(x, y)
    return calls


def layer_calls(shape, kernel_shape, stride, pad) -> dict[str, Callable[[], object]]:
    """Each input-gradient formulation of one layer, compiled with jaxlogit's options."""
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=kernel_shape) * 0.1, jnp.float32)
    padding = ((pad, pad), (pad, pad))
    out = jax.eval_shape(
        lambda a: _conv.conv(a, kernel, (stride, stride), padding), jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    grad = jnp.asarray(rng.normal(size=out.shape), jnp.float32)
    calls = {}
    for method in _conv.INPUT_GRADS:
        fn = _xla.jit(
            lambda g, method=method: _conv.conv_input_grad(
                g, kernel, shape, (stride, stride), padding, method=method
            )
        )
        calls[method] = lambda fn=fn: fn(grad)
    return calls


def model_table(arch: str, steps: int, repeats: int, cache: str | None) -> list[str]:
    model = _model.prepare(arch, cache=cache, with_torch=False)
    timings, _ = _timing.interleaved(compiled_variants(model, steps), repeats)
    base = timings[VARIANTS[0][0]].best
    rows = [
        f"### {arch}, batch {len(model.y)}: {steps} PGD steps ({model.weights})",
        "",
        "| variant | ms per step | speed-up |",
        "|---|---:|---:|",
    ]
    chosen = variants(arch)[-1][0]
    for label, *_ in variants(arch):
        steady = timings[label].best
        name = f"{label} (jaxlogit)" if label == chosen else label
        rows.append(f"| {name} | {steady / steps * 1e3:.1f} | {base / steady:.2f}x |")
    return rows


def layers_table(arch: str, repeats: int) -> list[str]:
    rows = [
        "",
        f"Input gradient of single layers ({arch}, jaxlogit's XLA options, ms):",
        "",
        "| input | kernel | stride | " + " | ".join(_conv.INPUT_GRADS) + " | chosen |",
        "|---|---|---:|" + "---:|" * (len(_conv.INPUT_GRADS) + 1),
    ]
    for shape, kernel_shape, stride, pad in LAYERS.get(arch, []):
        timings, _ = _timing.interleaved(layer_calls(shape, kernel_shape, stride, pad), repeats)
        cells = " | ".join(f"{timings[m].best * 1e3:.1f}" for m in _conv.INPUT_GRADS)
        chosen = _conv.input_grad_method(kernel_shape, (stride, stride))
        rows.append(f"| {shape} | {kernel_shape} | {stride} | {cells} | {chosen} |")
    return rows


def pool_table(repeats: int) -> list[str]:
    """Forward + input gradient of the 3x3/2 stem max-pool alone, both ways."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=POOL_LAYER), jnp.float32)
    batch, height, width, channels = POOL_LAYER
    out_shape = (batch, _pool.pooled_size(height, 3, 2, 1), _pool.pooled_size(width, 3, 2, 1), channels)
    grad = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
    calls = {}
    for name, pool in (
        ("select_and_scatter", _pool.select_and_scatter_max_pool),
        ("jaxlogit", _pool.max_pool_windows),
    ):
        fn = _xla.jit(lambda a, g, pool=pool: jax.vjp(lambda b: pool(b, 3, 2, 1), a)[1](g)[0])
        calls[name] = lambda fn=fn: fn(x, grad)
    timings, _ = _timing.interleaved(calls, repeats)
    cells = " | ".join(f"{timings[name].best * 1e3:.1f}" for name in calls)
    return [
        "",
        "Max-pool 3x3, stride 2, padding 1, forward + input gradient alone (jaxlogit's XLA options, ms):",
        "",
        "| input | " + " | ".join(calls) + " |",
        "|---|" + "---:|" * len(calls),
        f"| {POOL_LAYER} | {cells} |",
    ]


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["resnet_compact", "resnet50"])
    parser.add_argument(
        "--steps", type=int, default=None, help="PGD steps per program (default 10; 2 for resnet50)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="steady-state calls (best kept)")
    parser.add_argument("--cache", default=None, help="cache root with trained checkpoints")
    parser.add_argument("--out", type=pathlib.Path, default=_results.RESULTS / "conv_grad.md")
    args = parser.parse_args(argv)
    lines = [
        "# Input gradients on XLA:CPU",
        "",
        "Written by `python -m benchmarks.bench_conv_grad`; variants timed interleaved in "
        "one run, best of the steady-state calls.",
        "",
    ]
    for arch in args.arch:
        steps = args.steps or (2 if _model.is_imagenet(arch) else 10)
        lines += model_table(arch, steps, args.repeats, args.cache)
        lines += layers_table(arch, args.repeats)
        lines += (pool_table(args.repeats) if _model.is_imagenet(arch) else []) + [""]
        print("\n".join(lines), flush=True)
    return _results.write_report(lines, args.out)


if __name__ == "__main__":
    main()
