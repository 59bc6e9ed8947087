"""Why the corrector corrects: Jacobians, supporting classes and their overlap.

For a corrector-like ``g_fn`` (logits ``(B, C)`` -> corrected logits ``(B, C_out)``, eval
mode, rows independent) and logits ``z``:

>>> import jax.numpy as jnp
>>> from jaxlogit import explain
>>> g_fn = lambda z: z @ jnp.eye(4)
>>> z, y = jnp.zeros((6, 4)), jnp.arange(6) % 4
>>> explain.jacobian(g_fn, z).shape                  # H[b, i, k] = d g(z_b)_i / d z_b,k
(6, 4, 4)
>>> S = explain.supporting_scores(g_fn, z, y)        # (B, C): S_k = H[y, k] - mean_l H[l, k]
>>> k = explain.scaled_k(4)                          # the paper's k=10 assumes C=1000
>>> classes, counts = explain.supporting_classes(S, per_example=k, top=k)
>>> float(explain.bhattacharyya(counts, counts))
1.0

``two_layer_jacobian(params, z)`` is the fast closed form for jaxlogit's corrector,
``ablate_supporting`` lowers the supporting logits, ``instance_scores`` gives Figure 4.
"""

from jaxlogit.explain._ablation import AblationResult, ablate_supporting
from jaxlogit.explain._jacobian import (
    SCORES_CHUNK_SIZE,
    LogitsFn,
    jacobian,
    supporting_scores,
    supporting_scores_from_jacobian,
)
from jaxlogit.explain._similarity import bhattacharyya
from jaxlogit.explain._supporting import InstanceScores, instance_scores, scaled_k, supporting_classes
from jaxlogit.explain._two_layer import two_layer_jacobian

__all__ = [
    "SCORES_CHUNK_SIZE",
    "AblationResult",
    "InstanceScores",
    "LogitsFn",
    "ablate_supporting",
    "bhattacharyya",
    "instance_scores",
    "jacobian",
    "scaled_k",
    "supporting_classes",
    "supporting_scores",
    "supporting_scores_from_jacobian",
    "two_layer_jacobian",
]
