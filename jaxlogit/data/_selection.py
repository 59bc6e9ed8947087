"""The paper's "selected" evaluation set: correctly classified images, a fixed number per class."""

from __future__ import annotations

import logging
import pathlib

import numpy as np

from jaxlogit.errors import JaxlogitError

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


def read_name_list(path) -> list[str]:
    """The file names listed in ``path``, one per line (a path keeps its last part; blank lines
    and ``#`` comments are skipped).

    Raises:
      JaxlogitError: the file cannot be read or lists no name.
    """
    try:
        lines = pathlib.Path(path).read_text().splitlines()
    except OSError as err:
        raise JaxlogitError(f"--selected {path}: cannot read it ({err.strerror})") from None
    names = [line.split("#", 1)[0].strip().replace("\\", "/").rsplit("/", 1)[-1] for line in lines]
    names = [name for name in names if name]
    if not names:
        raise JaxlogitError(f"--selected {path} lists no file name; write one name per line")
    return names


def indices_of_names(file_names, wanted, source: str = "--selected", split: str = "evaluation") -> np.ndarray:
    """Sorted indices of the images named ``wanted`` among a split's ``file_names``.

    Args:
      file_names: the split's file name per index, ``(N,)``.
      wanted: the names to find (e.g. ``ILSVRC2012_val_00000001.JPEG``); repeats count once.
      source: where ``wanted`` came from, for the error message.
      split: the split's name, for the error message.

    Returns:
      int64 ``(M,)`` sorted indices, M = the number of distinct names.

    Raises:
      JaxlogitError: a name that is not in the split (the first few are named).
    """
    position = {name: i for i, name in enumerate(file_names)}
    missing = [name for name in dict.fromkeys(wanted) if name not in position]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise JaxlogitError(
            f"{source}: {len(missing)} name(s) not in the {split} split ({len(position)} images): {shown}; "
            "list file names of that split (e.g. ILSVRC2012_val_00000001.JPEG), one per line"
        )
    return np.unique(np.asarray([position[name] for name in wanted], np.int64))
