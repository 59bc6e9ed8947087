"""Per-sample time of full corrector Jacobians: torch.func vs JAX jacrev vs the closed form.

The corrector is ``relu(z W1 + b1) W2 + b2`` with C=1000 classes and D=10,000 hidden units
(the paper's), random weights (about half the hidden units active, as after training), eval
mode. Each method computes the full ``(C, C)`` Jacobian of every sample of a small batch:

* ``torch.func.vmap(torch.func.jacrev(g))`` on the same weights (skipped if torch is missing),
* ``explain.jacobian``: ``jax.jit(jax.vmap(jax.jacrev(g)))``, the general path for any g,
* ``explain.two_layer_jacobian``: ``W2^T diag(relu'(h)) W1^T`` over the active units only.

Run from the repository root (about a minute on 2 CPU cores)::

    python -m benchmarks.bench_jacobian            # --batch 8 --repeats 3 --classes 1000 --hidden 10000

It prints a Markdown table: best-of-``repeats`` seconds per sample (interleaved) and the speed-up over
torch.func measured in the same run, plus the largest difference between the methods.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlogit import explain


def random_corrector(num_classes: int, hidden: int, *, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Random float32 params in the corrector layout, scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)

    def normal(shape, scale):
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    return {
        "hidden": {
            "kernel": normal((num_classes, hidden), num_classes**-0.5),
            "bias": normal((hidden,), 0.1),
        },
        "output": {
            "kernel": normal((hidden, num_classes), hidden**-0.5),
            "bias": normal((num_classes,), 0.1),
        },
    }


def corrector_apply(params: dict, z: jax.Array) -> jax.Array:
    """The two-layer corrector's forward pass in eval mode, ``(B, C) -> (B, C)``."""
    hidden = jax.nn.relu(z @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return hidden @ params["output"]["kernel"] + params["output"]["bias"]


def seconds_per_sample(
    methods: dict[str, Callable[[], np.ndarray]], batch: int, repeats: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Best-of-``repeats`` wall time per sample of each method, and each warm-up call's result.

    The timed calls are interleaved (one round over all methods per repeat), so load from
    other processes on a shared machine hits every method alike.
    """
    results = {method: compute() for method, compute in methods.items()}
    times: dict[str, list[float]] = {method: [] for method in methods}
    for _ in range(repeats):
        for method, compute in methods.items():
            start = time.perf_counter()
            compute()
            times[method].append(time.perf_counter() - start)
    return {method: min(values) / batch for method, values in times.items()}, results


def torch_jacobians(params: dict, z: np.ndarray) -> Callable[[], np.ndarray] | None:
    """``torch.func.vmap(jacrev(g))`` on the same weights, or None without torch."""
    try:
        import torch
        from torch.func import jacrev, vmap
    except ImportError:
        return None
    w1, b1, w2, b2 = (
        torch.from_numpy(params[layer][name]) for layer in ("hidden", "output") for name in ("kernel", "bias")
    )
    z_torch = torch.from_numpy(z)
    jacobians = vmap(jacrev(lambda row: torch.relu(row @ w1 + b1) @ w2 + b2))
    return lambda: jacobians(z_torch).numpy()


def jax_jacobians(params: dict, z: np.ndarray) -> Callable[[], np.ndarray]:
    """``explain.jacobian``: jit(vmap(jacrev)) in one chunk of the whole batch."""
    g_fn = jax.tree_util.Partial(corrector_apply, jax.tree.map(jnp.asarray, params))
    z_jax = jnp.asarray(z)
    return lambda: np.asarray(explain.jacobian(g_fn, z_jax, chunk_size=len(z)).block_until_ready())


def closed_form_jacobians(params: dict, z: np.ndarray) -> Callable[[], np.ndarray]:
    """``explain.two_layer_jacobian``: the closed form over the active hidden units."""
    params_jax = jax.tree.map(jnp.asarray, params)
    z_jax = jnp.asarray(z)
    return lambda: np.asarray(
        explain.two_layer_jacobian(params_jax, z_jax, chunk_size=len(z)).block_until_ready()
    )


def markdown_table(times: dict[str, float], reference: str | None) -> str:
    """Rows ``method | s / sample | speed-up vs reference``."""
    lines = ["| method | s / sample | speed-up vs torch.func |", "|---|---:|---:|"]
    for method, seconds in times.items():
        ratio = f"{times[reference] / seconds:.2f}x" if reference else "n/a (no torch)"
        lines.append(f"| {method} | {seconds:.4f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="samples per timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (best is kept)")
    parser.add_argument("--classes", type=int, default=1000, help="C")
    parser.add_argument("--hidden", type=int, default=10_000, help="D")
    args = parser.parse_args(argv)

    params = random_corrector(args.classes, args.hidden)
    z = (3.0 * np.random.default_rng(1).standard_normal((args.batch, args.classes))).astype(np.float32)
    active = np.mean(z @ params["hidden"]["kernel"] + params["hidden"]["bias"] > 0)
    methods = {
        "torch.func vmap(jacrev)": torch_jacobians(params, z),
        "JAX jit(vmap(jacrev)) (explain.jacobian)": jax_jacobians(params, z),
        "closed form, active units (explain.two_layer_jacobian)": closed_form_jacobians(params, z),
    }
    methods = {method: compute for method, compute in methods.items() if compute is not None}
    times, results = seconds_per_sample(methods, args.batch, args.repeats)
    reference = "torch.func vmap(jacrev)" if "torch.func vmap(jacrev)" in times else None

    print(
        f"Full {args.classes}x{args.classes} Jacobians, D={args.hidden}, batch {args.batch}, best of "
        f"{args.repeats}; "
        f"{os.cpu_count()} CPU cores, {jax.default_backend()} backend, {active:.1%} of hidden units active.\n"
    )
    print(markdown_table(times, reference))
    first = next(iter(results.values()))
    spread = max(float(np.max(np.abs(result - first))) for result in results.values())
    print(f"\nLargest difference between methods: {spread:.2e} (entries up to {np.max(np.abs(first)):.2e}).")
    return times


if __name__ == "__main__":
    main()
