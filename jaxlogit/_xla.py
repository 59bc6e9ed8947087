"""``jax.jit`` with the XLA options jaxlogit compiles its convolution-heavy programs with.

On CPU, XLA (jaxlib 0.10) hands convolutions to YNNPACK by default. For the networks here
Eigen's convolutions are faster: one PGD step (forward + input gradient) on resnet_compact at
batch 256 takes 70 ms instead of 105 ms, on resnet50 at batch 8 1.08 s instead of 1.25 s
(``python benchmarks/bench_conv_grad.py`` measures both in one run). ``CONV_OPTIONS`` keeps
YNNPACK for matrix products only. It is a debug option of every XLA backend, so GPU and TPU
compilations accept it and ignore it. Set ``JAXLOGIT_XLA_OPTIONS=0`` to compile with XLA's
defaults instead.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax

CONV_OPTIONS: dict[str, str] = (
    {} if os.environ.get("JAXLOGIT_XLA_OPTIONS") == "0"
    else {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"})


def jit(fun: Callable | None = None, /, **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)`` compiled with ``CONV_OPTIONS``; also a decorator factory.

    ``@jit``, ``@jit(static_argnames=...)`` and ``jit(f, ...)`` all work like ``jax.jit``.
    A jitted function called inside another one is compiled as part of the outer program, so
    the outermost jit of a program is the one that needs these options.
    """
    if fun is None:
        return lambda f: jit(f, **kwargs)
    return jax.jit(fun, compiler_options=CONV_OPTIONS or None, **kwargs)
