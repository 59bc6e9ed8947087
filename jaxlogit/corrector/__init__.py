"""The logit corrector g (the paper's "defender") and its training, Algorithm 1.

g sees only logits: ``g(z*)`` should give the true label of an attacked image, and ``g(z)``
keep the clean prediction. Example::

    from jaxlogit import corrector, store

    result = corrector.train(store.open(train_dir), num_classes=10, epochs=50, key=jax.random.key(0))
    g = corrector.eval_fn(result.module, result.params)       # (B, C) -> (B, C), eval mode
    corrector.evaluate(result.params, result.module, test["adv_logits"], test["labels"])
    corrector.save(out_dir, result.params, {"best_epoch": result.best_epoch})
    module, params, meta = corrector.load(out_dir)
"""

from jaxlogit.corrector._checkpoint import load, save
from jaxlogit.corrector._evaluate import corrected_logits, eval_fn, evaluate
from jaxlogit.corrector._module import Corrector, check_depth, init_params, module_from_params
from jaxlogit.corrector._parallel import data_mesh
from jaxlogit.corrector._step import (
    CorrectorState,
    corrector_optimizer,
    init_state,
    make_train_step,
    mix_batch,
)
from jaxlogit.corrector._train import TrainResult, adversarial_or_clean, holdout_split, train

__all__ = [
    "Corrector",
    "CorrectorState",
    "TrainResult",
    "adversarial_or_clean",
    "check_depth",
    "corrected_logits",
    "corrector_optimizer",
    "data_mesh",
    "eval_fn",
    "evaluate",
    "holdout_split",
    "init_params",
    "init_state",
    "load",
    "make_train_step",
    "mix_batch",
    "module_from_params",
    "save",
    "train",
]
