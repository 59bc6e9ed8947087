"""One table of datasets: every command, experiment and model spec reads a dataset from here.

A dataset is a frozen :class:`DatasetSpec` (its loader, split names, image shape, normalisation,
classes and the backbones it uses); ``register`` adds one, ``get`` looks one up by name.

>>> spec = get("fashion_mnist")
>>> spec.train_split, spec.eval_split, spec.image_shape, spec.num_classes
('train', 'test', (28, 28, 1), 10)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

from jaxlogit.data import _fashion_mnist, _imagenet
from jaxlogit.data._class_names import imagenet_class_names
from jaxlogit.data._split import Split
from jaxlogit.data._transforms import CROP
from jaxlogit.errors import JaxlogitError

COMPACT = "compact"
"""Backbones trained here from scratch (``vgg_compact``, ``resnet_compact``, ``densenet_compact``)."""
IMAGENET = "imagenet"
"""The torchvision ImageNet backbones (``vgg16_bn``, ``resnet50``, ...), from converted weights."""
BACKBONE_KINDS = (COMPACT, IMAGENET)

Loader = Callable[[str, "str | os.PathLike | None"], Split]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything the library needs to know about one dataset.

    Attributes:
      name: registry name, the ``--dataset`` value.
      loader: ``(split, data_dir) -> Split``; raises ``JaxlogitError`` for an unknown split or
        missing data.
      train_split: the split backbones and correctors learn from (``"train"``).
      eval_split: the split results are reported on (``"test"``, ImageNet ``"validation"``).
      image_shape: ``(H, W, C)`` of the images ``get_batch`` returns (after any transform).
      mean: per-channel mean ``(C,)`` subtracted from [0, 1] images.
      std: per-channel std ``(C,)`` dividing them.
      num_classes: C, the number of logits.
      class_names: the C class names, or a function returning them (read on demand).
      backbones: ``COMPACT`` (trained here) or ``IMAGENET`` (converted torchvision weights).
      description: one line for humans.
      find: optional ``data_dir -> path or None``: where the data would be read from (``jaxlogit info``).
      install_hint: how to get the data, shown by ``jaxlogit info`` when ``find`` finds nothing.
      sources: optional ``(split, data_dir) -> files or None``: the files a split is read from, so
        that its fingerprint is remembered by their identity (``split_fingerprint``) rather than
        computed by loading it each time.
      resizable: whether ``loader`` takes ``image_size=S`` (``--image-size``; square S x S images).
      balanced_subsets: whether ``--train-limit``/``--test-limit N`` take a seeded class-balanced
        subset (``data.limited``) instead of the first N images.
    """

    name: str
    loader: Loader
    train_split: str
    eval_split: str
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    class_names: Sequence[str] | Callable[[], Sequence[str]]
    backbones: str = COMPACT
    description: str = ""
    find: Callable[[str | os.PathLike | None], os.PathLike | None] | None = None
    install_hint: str = ""
    sources: Callable[[str, str | os.PathLike | None], Sequence[os.PathLike] | None] | None = None
    resizable: bool = False
    balanced_subsets: bool = False

    @property
    def splits(self) -> tuple[str, str]:
        """``(train_split, eval_split)``."""
        return self.train_split, self.eval_split

    def classes(self) -> tuple[str, ...]:
        """The ``num_classes`` class names (calls ``class_names`` if it is a function)."""
        names = self.class_names() if callable(self.class_names) else self.class_names
        return tuple(names)

    def load(
        self, split: str, data_dir: str | os.PathLike | None = None, image_size: int | None = None
    ) -> Split:
        """``loader(split, data_dir)``, with ``image_size=`` when given.

        Raises:
          JaxlogitError: ``image_size`` for a dataset that is not ``resizable``.
        """
        if image_size is None:
            return self.loader(split, data_dir)
        if not self.resizable:
            resizable = ", ".join(n for n in names() if get(n).resizable)
            raise JaxlogitError(
                f"--image-size applies to datasets decoded from files ({resizable}); drop it for {self.name}"
            )
        return self.loader(split, data_dir, image_size=image_size)


DEFAULT_DATASET = "fashion_mnist"
"""The embedded default: what every command and experiment uses without ``--dataset``."""

_DATASETS: dict[str, DatasetSpec] = {}


def _problems(spec: DatasetSpec) -> list[str]:
    """What is inconsistent in ``spec`` (empty if nothing)."""
    problems = []
    if len(spec.image_shape) != 3 or min(spec.image_shape) < 1:
        problems.append(f"image_shape {spec.image_shape} is not (H, W, C)")
    elif not len(spec.mean) == len(spec.std) == spec.image_shape[2]:
        problems.append(f"mean/std need {spec.image_shape[2]} values (one per channel)")
    if spec.num_classes < 2:
        problems.append(f"num_classes {spec.num_classes} < 2")
    if not callable(spec.class_names) and len(spec.class_names) != spec.num_classes:
        problems.append(f"{len(spec.class_names)} class names for {spec.num_classes} classes")
    if spec.train_split == spec.eval_split:
        problems.append("train_split equals eval_split")
    if spec.backbones not in BACKBONE_KINDS:
        problems.append(f"backbones {spec.backbones!r} is not one of {', '.join(BACKBONE_KINDS)}")
    return problems


def register(spec: DatasetSpec) -> DatasetSpec:
    """Adds ``spec`` to the registry under ``spec.name`` and returns it.

    Raises:
      JaxlogitError: the name is taken or the spec is inconsistent.
    """
    if spec.name in _DATASETS:
        raise JaxlogitError(
            f"dataset {spec.name!r} is already registered; pick another name or unregister it first"
        )
    problems = _problems(spec)
    if problems:
        raise JaxlogitError(f"dataset {spec.name!r} not registered: {'; '.join(problems)}")
    _DATASETS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Removes dataset ``name`` (tests register temporary datasets); unknown names raise."""
    get(name)
    del _DATASETS[name]


def get(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``.

    Raises:
      JaxlogitError: no such dataset (the message lists the registered ones).
    """
    spec = _DATASETS.get(name)
    if spec is None:
        raise JaxlogitError(f"unknown dataset {name!r}; use one of: {', '.join(_DATASETS)}")
    return spec


def names() -> list[str]:
    """The registered dataset names, in registration order."""
    return list(_DATASETS)


def load(
    name: str, split: str, data_dir: str | os.PathLike | None = None, image_size: int | None = None
) -> Split:
    """One split of a registered dataset.

    Args:
      name: a name from ``names()``, e.g. ``"fashion_mnist"`` or ``"imagenet"``.
      split: one of the dataset's splits: ``"train"``/``"test"`` for Fashion-MNIST,
        ``"validation"``/``"train"`` for ImageNet.
      data_dir: where the data is; optional for Fashion-MNIST, required for ImageNet.
      image_size: side of the square images of a ``resizable`` dataset (ImageNet: default 224).

    Returns:
      A ``Split``: ``get_batch(indices)`` gives float32 ``(B, H, W, C)`` in [0, 1] and int32 ``(B,)``.

    Raises:
      JaxlogitError: unknown name or split, or data not found.
    """
    return get(name).load(split, data_dir, image_size)


register(
    DatasetSpec(
        name="fashion_mnist",
        loader=_fashion_mnist.load_fashion_mnist,
        train_split="train",
        eval_split="test",
        image_shape=(28, 28, 1),
        mean=(0.2860,),
        std=(0.3530,),
        num_classes=10,
        class_names=_fashion_mnist.CLASS_NAMES,
        backbones=COMPACT,
        description="Fashion-MNIST: 60,000 + 10,000 grey 28x28 images of 10 clothes (the embedded default)",
        find=_fashion_mnist.find_fashion_mnist,
        install_hint="apt-get install -y dataset-fashion-mnist, or --data-dir",
        sources=_fashion_mnist.source_files,
    )
)
register(
    DatasetSpec(
        name="imagenet",
        loader=_imagenet.load_imagenet,
        train_split="train",
        eval_split="validation",
        image_shape=(CROP, CROP, 3),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        num_classes=1000,
        class_names=imagenet_class_names,
        backbones=IMAGENET,
        description="ImageNet (ILSVRC 2012) from --data-dir: TFDS imagenet2012 or val/<wnid>/*.JPEG, "
        "224x224 crops",
        resizable=True,
        balanced_subsets=True,
    )
)
