"""jaxlogit: defending adversarial attacks by correcting logits, in JAX/Flax.

Layers, each importing only the ones before it:
``data -> models -> attacks -> store -> corrector -> explain``; the CLI
(``jaxlogit.cli``) and ``experiments/`` sit on top.
"""

__version__ = "0.1.0"
