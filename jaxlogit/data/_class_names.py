"""ImageNet-1k class names and WordNet ids, shipped as text files in this package.

``imagenet_classes.txt`` holds torchvision's human-readable names and ``imagenet_wnids.txt``
the matching WordNet ids, one per line, both in the standard class-index order (the wnids
sorted, which is also torchvision's and TFDS's order).
"""

from __future__ import annotations

import functools
import importlib.resources


def _read_lines(filename: str) -> tuple[str, ...]:
    text = importlib.resources.files("jaxlogit.data").joinpath(filename).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names by class index (index 640 is ``"manhole cover"``)."""
    return _read_lines("imagenet_classes.txt")


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet WordNet ids by class index (sorted: ``"n01440764"`` first)."""
    return _read_lines("imagenet_wnids.txt")
