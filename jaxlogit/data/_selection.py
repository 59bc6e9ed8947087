"""The paper's "selected" evaluation set: correctly classified images, a fixed number per class."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def selected_indices(predictions, labels, per_class: int, num_classes: int | None = None) -> np.ndarray:
    """The first ``per_class`` correctly classified indices of each class, sorted.

    Deterministic: within each class the lowest indices are kept. For ImageNet the paper uses
    ``per_class=1`` on the validation set (1,000 images); for 10-class data we use 100.

    A class with fewer than ``per_class`` correctly classified images contributes all it has;
    a warning is logged (logger ``jaxlogit.data._selection``) naming how many classes fell
    short, and the result is then shorter than ``per_class * num_classes``.

    Args:
      predictions: predicted classes, int ``(N,)``, or logits ``(N, C)`` (argmax is taken).
      labels: true classes, int ``(N,)``.
      per_class: how many correct images to keep per class (>= 1).
      num_classes: number of classes; default ``labels.max() + 1``.

    Returns:
      int64 ``(M,)`` sorted indices into the split, ``M <= per_class * num_classes``.
    """
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} do not match")
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0

    correct = np.flatnonzero(predictions == labels)
    classes = labels[correct]
    order = np.argsort(classes, kind="stable")  # by class, then by index
    correct, classes = correct[order], classes[order]
    first_of_class = np.searchsorted(classes, classes, side="left")
    rank_in_class = np.arange(classes.size) - first_of_class
    chosen = np.sort(correct[rank_in_class < per_class]).astype(np.int64)

    counts = np.bincount(labels[chosen], minlength=num_classes)
    short = np.flatnonzero(counts < per_class)
    if short.size:
        logger.warning(
            "selected_indices: %d of %d classes have fewer than %d correctly classified images "
            "(first: %s); selected %d instead of %d",
            short.size,
            num_classes,
            per_class,
            short[:10].tolist(),
            chosen.size,
            per_class * num_classes,
        )
    return chosen
