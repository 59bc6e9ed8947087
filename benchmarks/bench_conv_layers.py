"""Every convolution of a backbone alone, with each XLA:CPU convolution library: a step's floor.

An attack step is one forward pass and one input gradient. This benchmark finds every
convolution ``--arch`` runs (input and kernel shapes, stride, padding, at the bench batch) and
times each alone, forward and forward + input gradient (``fast_conv``'s backward pass), with
Eigen's convolutions (jaxlogit's ``_xla.CONV_OPTIONS``) and with YNNPACK's (XLA's default).
Each runs in a compiled loop whose every iteration feeds the next one, as layers feed each
other in a network (a loop of independent calls lets XLA overlap or simplify them and times
YNNPACK up to 3x too fast); the same loop without the convolution is timed and subtracted.

The sum over the layers of the faster library's forward + gradient is what one attack step
spends in convolutions alone, with nothing else (normalisation, ReLU, pooling, concatenation
and their gradients take no time in it). The report sets it beside jaxlogit's whole PGD step
and, with the ``torch`` extra, torchattacks' PGD step on the same weights, timed interleaved in
the same run, and the step a 3x speed-up needs. Run from the repository root::

    python -m benchmarks.bench_conv_layers                       # the three compact backbones
    python -m benchmarks.bench_conv_layers --arch densenet_compact

Writes ``benchmarks/results/conv_layers.md``.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from benchmarks import _results
from jaxlogit import _xla, attacks, models
from jaxlogit.bench import _attacks, _flops, _model, _timing
from jaxlogit.models import _conv, _registry

LIBRARIES = {
    "Eigen": _xla.CONV_OPTIONS,
    "YNNPACK": {
        "xla_cpu_experimental_ynn_fusion_type": (
            "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
        )
    },
}
LOOP = 20  # iterations of each layer's compiled loop
PASSES = ("forward", "gradient")


class ConvLayer(NamedTuple):
    """One convolution as a backbone calls it: shapes (B,H,W,I), (kh,kw,I,O) and geometry."""

    in_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    strides: tuple[int, int]
    padding: _conv.Padding

    def _plain(self, x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
        return _conv.conv(x, kernel, self.strides, self.padding)

    def _operands(self) -> tuple[jax.ShapeDtypeStruct, jax.ShapeDtypeStruct]:
        return (
            jax.ShapeDtypeStruct(self.in_shape, jnp.float32),
            jax.ShapeDtypeStruct(self.kernel_shape, jnp.float32),
        )

    def out_shape(self) -> tuple[int, ...]:
        """(B, H', W', O)."""
        return tuple(jax.eval_shape(self._plain, *self._operands()).shape)

    def forward_flops(self) -> float:
        """FLOPs XLA counts for the plain forward convolution."""
        return _flops.compiled_flops(self._plain, *self._operands())


def conv_layers(arch: str, batch: int) -> collections.Counter:
    """``{ConvLayer: times called}`` of one forward pass of ``arch`` on ``batch`` images."""
    module, spec = models.create(arch), models.spec(arch)
    found: collections.Counter = collections.Counter()

    def record(next_fun, args, kwargs, context):
        layer = context.module
        if isinstance(layer, _conv.FastConv) and context.method_name == "__call__":
            x = args[0]
            padding = tuple(tuple(int(p) for p in pair) for pair in layer.padding)
            found[
                ConvLayer(
                    tuple(x.shape),
                    (*layer.kernel_size, x.shape[-1], layer.features),
                    tuple(layer.strides),
                    padding,
                )
            ] += 1
        return next_fun(*args, **kwargs)

    variables = _registry.variable_shapes(module, spec.input_shape)
    images = jax.ShapeDtypeStruct((batch, *spec.input_shape), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(module.apply, variables, images)
    return found


def fold(y: jnp.ndarray, shape: tuple[int, ...]) -> jnp.ndarray:
    """(B,H',W',O) -> (B,H,W,I) with H' <= H, W' <= W: channels tiled, then cropped; zero rows."""
    channels = y.shape[-1]
    y = jnp.tile(y, (1, 1, 1, -(-shape[-1] // channels)))[..., : shape[-1]]
    return jnp.pad(y, [(0, 0), (0, shape[1] - y.shape[1]), (0, shape[2] - y.shape[2]), (0, 0)])


def layer_loop(layer: ConvLayer, *, gradient: bool, with_conv: bool) -> Callable:
    """``(x (B,H,W,I), kernel) -> x``: ``LOOP`` dependent iterations of the layer's pass.

    Each iteration applies a ReLU, the convolution (``gradient``: its forward pass and input
    gradient) and mixes the result into the next input. ``with_conv=False`` runs the same
    loop with a slice in place of the convolution: the overhead to subtract.
    """
    out_shape = layer.out_shape()

    def apply(h, kernel):
        if with_conv:
            return _conv.fast_conv(h, kernel, layer.strides, layer.padding)
        rows, cols = out_shape[1:3]
        return fold(h[:, :rows, :cols, :1], out_shape) * kernel[0, 0, 0, 0]

    def step(c, kernel):
        if gradient:
            return jax.grad(lambda h: jnp.sum(apply(jnp.maximum(h, 0.0), kernel) ** 2))(c)
        return fold(apply(jnp.maximum(c, 0.0), kernel), layer.in_shape)

    def loop(x, kernel):
        return lax.fori_loop(0, LOOP, lambda _, c: c * 0.5 + 1e-3 * step(c, kernel), x)

    return loop


def layer_calls(layer: ConvLayer) -> dict[str, Callable[[], object]]:
    """No-argument calls, each one loop: ``"{library} {pass}"`` with the convolution and
    ``"rest {pass}"`` without it (it has no convolution, so one library's compile serves both)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=layer.in_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=layer.kernel_shape) * 0.1, jnp.float32)
    programs = {("rest", name): (_xla.CONV_OPTIONS, False) for name in PASSES}
    programs.update(
        {(library, name): (options, True) for library, options in LIBRARIES.items() for name in PASSES}
    )
    calls = {}
    for (library, name), (options, with_conv) in programs.items():
        loop = layer_loop(layer, gradient=name == "gradient", with_conv=with_conv)
        program = jax.jit(loop, compiler_options=options).lower(x, kernel).compile()
        calls[f"{library} {name}"] = lambda program=program: program(x, kernel)
    return calls


def layer_seconds(layer: ConvLayer, repeats: int) -> dict[str, float]:
    """``{"{library} {forward|gradient}": seconds of one call of the layer}``, overhead removed."""
    timings, _ = _timing.interleaved(layer_calls(layer), repeats)
    return {
        f"{library} {name}": max(timings[f"{library} {name}"].best - timings[f"rest {name}"].best, 0.0) / LOOP
        for library in LIBRARIES
        for name in PASSES
    }


def step_calls(model: _model.BenchModel) -> dict[str, Callable[[], object]]:
    """jaxlogit's PGD and, with torch, torchattacks' on the same weights, as the bench runs them."""
    calls = {"jaxlogit": _attacks.jax_attack("pgd", model.logits_fn, model.x, model.y)}
    if model.torch_model is not None:
        from jaxlogit.bench import _torch

        calls["torchattacks"] = _torch.attack_call("pgd", model.torch_model, model.x, model.y)
    return calls


def layer_rows(layers: collections.Counter, seconds: dict, peak: float) -> list[str]:
    """The per-layer table: ms of each library and pass, the faster one's GFLOP/s, % of peak."""
    rows = [
        (
            "| input | kernel | stride | x | Eigen fwd | Eigen fwd+grad | YNNPACK fwd | "
            "YNNPACK fwd+grad | best fwd+grad GFLOP/s | % peak |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layer, count in layers.items():
        times = seconds[layer]
        best = min(times["Eigen gradient"], times["YNNPACK gradient"])
        gflops = 2 * layer.forward_flops() / best / 1e9 if best > 0 else float("nan")
        cells = " | ".join(f"{times[f'{lib} {name}'] * 1e3:.2f}" for lib in LIBRARIES for name in PASSES)
        rows.append(
            f"| {layer.in_shape} | {layer.kernel_shape} | {layer.strides[0]} | {count} "
            f"| {cells} | {gflops:.0f} | {100 * gflops / peak:.0f} |"
        )
    return rows


def summary_rows(layers: collections.Counter, seconds: dict, steps: dict) -> list[str]:
    """Sums over the layers set beside the whole steps, in ms per attack step."""

    def total(key: str) -> float:
        return sum(count * seconds[layer][key] for layer, count in layers.items())

    best = sum(
        count * min(seconds[layer]["Eigen gradient"], seconds[layer]["YNNPACK gradient"])
        for layer, count in layers.items()
    )
    rows = [
        "",
        "| per attack step (forward + input gradient) | ms |",
        "|---|---:|",
        f"| convolutions alone, Eigen | {total('Eigen gradient') * 1e3:.1f} |",
        f"| convolutions alone, YNNPACK | {total('YNNPACK gradient') * 1e3:.1f} |",
        f"| convolutions alone, faster library per layer | **{best * 1e3:.1f}** |",
        f"| jaxlogit's PGD step (whole network, Eigen) | {steps['jaxlogit'] * 1e3:.1f} |",
    ]
    if "torchattacks" in steps:
        rows += [
            f"| torchattacks' PGD step | {steps['torchattacks'] * 1e3:.1f} |",
            f"| the step 3x torchattacks needs | **{steps['torchattacks'] / 3 * 1e3:.1f}** |",
        ]
    return rows


def arch_report(arch: str, repeats: int, cache: str | None, peak: float) -> list[str]:
    """One backbone's section of the report."""
    model = _model.prepare(arch, cache=cache)
    layers = conv_layers(arch, len(model.y))
    seconds = {}
    for index, layer in enumerate(layers, 1):
        print(f"{arch}: layer {index}/{len(layers)} {layer.in_shape} {layer.kernel_shape}", flush=True)
        seconds[layer] = layer_seconds(layer, repeats)
    timings, _ = _timing.interleaved(step_calls(model), repeats)
    steps = {name: timing.best / attacks.get("pgd").settings["steps"] for name, timing in timings.items()}
    return (
        [
            f"## {arch}, batch {len(model.y)} ({model.weights})",
            "",
            "Each convolution alone, ms per call (x = calls per forward pass):",
            "",
        ]
        + layer_rows(layers, seconds, peak)
        + summary_rows(layers, seconds, steps)
        + [""]
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["resnet_compact", "vgg_compact", "densenet_compact"])
    parser.add_argument("--repeats", type=int, default=5, help="steady-state calls (best kept)")
    parser.add_argument("--cache", default=None, help="cache root with trained checkpoints")
    parser.add_argument("--out", type=pathlib.Path, default=_results.RESULTS / "conv_layers.md")
    args = parser.parse_args(argv)
    peak = _flops.matmul_peak_gflops()
    lines = [
        "# Convolutions alone on XLA:CPU",
        "",
        (
            "Written by `python -m benchmarks.bench_conv_layers`; best of the steady-state "
            f"calls, interleaved; float32 matmul peak {peak:.0f} GFLOP/s (jnp.dot 2048^3, "
            "this run)."
        ),
        "",
    ]
    for arch in args.arch:
        lines += arch_report(arch, args.repeats, args.cache, peak)
        print("\n".join(lines), flush=True)
    return _results.write_report(lines, args.out)


if __name__ == "__main__":
    main()
