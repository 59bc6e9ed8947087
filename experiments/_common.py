"""What every experiment shares: the setup per dataset, cached artifacts, evaluation, reports.

An experiment module defines a frozen config (whose docstring gives the command and the
expected result), a ``run(config, setup) -> dict`` and a ``main`` built with ``cli_main``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import sys
import time
from collections.abc import Callable

import click
import numpy as np

from jaxlogit import _validate, _xla, adaptive, data, explain, paths, pipeline, progress, store, training
from jaxlogit.cli._app import BatchSize, progress_options
from jaxlogit.errors import JaxlogitError

COMPACT = ("vgg_compact", "resnet_compact", "densenet_compact")
IMAGENET = ("vgg16_bn", "resnet50", "densenet121")


BATCH_OPTIONS = ("attack_batch", "predict_batch", "corrector_batch", "adaptive_batch", "explain_batch")
"""The batch sizes every experiment takes (``--attack-batch N``, ...); ``corrector_batch`` is
``Setup.corrector.batch_size``."""
AUTO_BATCHES = ("attack_batch", "predict_batch")
"""Those that also take ``auto`` (their default): the largest that fits the device."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """Dataset, backbones and sizes shared by the experiments.

    Attributes:
      dataset: a ``jaxlogit.data`` name: ``fashion_mnist`` (embedded default), ``imagenet``, ...
      backbones: the archs of Table 1; ``backbones[1]`` is the ResNet used by Tables 2-3.
      train_limit: training images whose logits train the corrector (None: all).
      test_limit: evaluation images ("full" set; None: all).
      per_class: images per class of the *selected* set.
      corrector: corrector training settings (its ``batch_size``: ``--corrector-batch``).
      attack_batch: images per compiled attack call (logit stores, the selected set's logits), or
        ``auto``: the largest up to ``pipeline.DEFAULT_ATTACK_BATCH`` that fits the device.
      predict_batch: images per compiled call of clean predictions (the selected set), or ``auto``.
      adaptive_batch: images per compiled call of the adaptive attacks (``experiments.adaptive``).
      explain_batch: logit rows per compiled call of the supporting scores (explanations).
      data_dir, weights_dir, cache_dir: where data, converted ImageNet weights and the cache are.
    """

    dataset: str = data.DEFAULT_DATASET
    backbones: tuple[str, ...] = COMPACT
    train_limit: int | None = pipeline.DEFAULT_TRAIN_LIMIT
    test_limit: int | None = None
    per_class: int = 100
    corrector: pipeline.CorrectorConfig = pipeline.DEFAULT_CORRECTOR
    data_dir: str | None = None
    weights_dir: str | None = None
    cache_dir: str | None = None
    attack_batch: int | str = pipeline.AUTO
    predict_batch: int | str = pipeline.AUTO
    adaptive_batch: int = adaptive.AdaptiveConfig.batch_size
    explain_batch: int = explain.SCORES_CHUNK_SIZE

    def __post_init__(self):
        for name in ("attack_batch", "predict_batch", "adaptive_batch", "explain_batch"):
            if getattr(self, name) != pipeline.AUTO or name not in AUTO_BATCHES:
                _validate.positive_int(f"--{name.replace('_', '-')}", getattr(self, name))

    @property
    def resnet(self) -> str:
        """The ResNet backbone (Tables 2 and 3, and the selected set)."""
        return next(b for b in self.backbones if "resnet" in b)

    @property
    def train_split_name(self) -> str:
        """The dataset's training split."""
        return data.get(self.dataset).train_split

    @property
    def test_split_name(self) -> str:
        """The dataset's evaluation split (``test``, ImageNet ``validation``)."""
        return data.get(self.dataset).eval_split

    @property
    def trains_backbones(self) -> bool:
        """Whether the backbones are compact ones trained here (else converted ImageNet weights)."""
        return data.get(self.dataset).backbones == data.COMPACT


def default_setup(dataset: str, **overrides) -> Setup:
    """The setup of ``dataset``: the compact models on a compact dataset (Fashion-MNIST), or the
    paper's models and settings on one that uses the ImageNet backbones."""
    if data.get(dataset).backbones == data.COMPACT:
        return Setup(**{"dataset": dataset, **overrides})
    paper = dict(
        dataset=dataset,
        backbones=IMAGENET,
        train_limit=None,
        per_class=1,
        corrector=pipeline.CorrectorConfig(),
    )
    return Setup(**{**paper, **overrides})


def load_backbone(setup: Setup, arch: str, *, progress: bool = True) -> training.Backbone:
    """The trained compact backbone (cached) or the converted ImageNet checkpoint."""
    if setup.trains_backbones:
        config = training.default_config(arch, dataset=setup.dataset)
        return training.ensure_backbone(
            config, data_dir=setup.data_dir, cache=setup.cache_dir, progress=progress
        )
    if not setup.weights_dir:
        raise JaxlogitError(
            f"--dataset {setup.dataset} needs --weights-dir DIR holding one "
            "`jaxlogit convert` output per arch (DIR/resnet50, ...)"
        )
    return training.load_backbone(pathlib.Path(setup.weights_dir) / arch)


@functools.cache
def load_split(setup: Setup, name: str):
    """``train`` or the evaluation split of ``setup.dataset``."""
    return data.load(setup.dataset, name, data_dir=setup.data_dir)


def logits(
    setup: Setup,
    backbone: training.Backbone,
    attack: pipeline.AttackConfig,
    which: str,
    *,
    progress: bool = True,
) -> store.LogitStore:
    """The cached logit store of ``backbone`` x ``attack`` on ``which`` ('train' or 'test')."""
    name = setup.train_split_name if which == "train" else setup.test_split_name
    limit = setup.train_limit if which == "train" else setup.test_limit
    return pipeline.ensure_logits(
        backbone,
        attack,
        load_split(setup, name),
        name,
        limit=limit,
        batch_size=setup.attack_batch,
        cache=setup.cache_dir,
        progress=progress,
    )


def corrector_for(
    setup: Setup,
    backbone: training.Backbone,
    attack: pipeline.AttackConfig,
    config: pipeline.CorrectorConfig | None = None,
    *,
    progress: bool = True,
) -> pipeline.TrainedCorrector:
    """The corrector trained on ``attack``'s training logits of ``backbone`` (cached)."""
    train_split = load_split(setup, setup.train_split_name)
    return pipeline.corrector_for_attack(
        backbone,
        attack,
        train_split,
        config or setup.corrector,
        limit=setup.train_limit,
        cache=setup.cache_dir,
        progress=progress,
        batch_size=setup.attack_batch,
    )


def selected_indices(setup: Setup, *, progress: bool = True) -> np.ndarray:
    """The paper's *selected* set: ``per_class`` evaluation images per class that the ResNet gets right."""
    backbone = load_backbone(setup, setup.resnet, progress=progress)
    return pipeline.selected_indices(
        backbone,
        load_split(setup, setup.test_split_name),
        per_class=setup.per_class,
        limit=setup.test_limit,
        cache=setup.cache_dir,
        batch_size=setup.predict_batch,
    )


def accuracies(
    test_store, corrector: pipeline.TrainedCorrector, rows: np.ndarray | None = None
) -> dict[str, float]:
    """Percent accuracy on clean and adversarial logits, without and with correction.

    Args:
      test_store: logits of the evaluation images (a ``LogitStore`` or ``Rows``).
      corrector: the corrector to apply.
      rows: a subset of rows (e.g. the selected set), or None for all.
    """
    pick = (lambda a: np.asarray(a)) if rows is None else (lambda a: np.asarray(a)[rows])
    clean, adv, labels = (
        pick(test_store["clean_logits"]),
        pick(test_store["adv_logits"]),
        pick(test_store["labels"]),
    )

    def pct(pred):
        return round(100.0 * float(np.mean(pred == labels)), 2)

    return {
        "clean": pct(clean.argmax(-1)),
        "clean_corrected": pct(corrector.predict_classes(clean)),
        "adv": pct(adv.argmax(-1)),
        "adv_corrected": pct(corrector.predict_classes(adv)),
    }


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with two decimals."""

    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else ("-" if v is None else str(v))

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    out_dir: pathlib.Path, name: str, markdown: str, payload: dict, figures: dict | None = None
) -> pathlib.Path:
    """Writes ``NAME.md`` and ``NAME.json`` (and figures) atomically into ``out_dir``; the JSON
    also records the attack batches this process ran (``pipeline.CHOSEN_BATCHES``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{name}.md"
    paths.write_text_atomic(md, markdown + "\n")
    if pipeline.CHOSEN_BATCHES:
        payload = {**payload, "attack_batches": dict(pipeline.CHOSEN_BATCHES)}
    paths.write_json_atomic(out_dir / f"{name}.json", payload)
    for filename, fig in (figures or {}).items():
        target = out_dir / filename
        fig.savefig(target.with_suffix(".tmp.png"), dpi=120, bbox_inches="tight")
        target.with_suffix(".tmp.png").replace(target)
    return out_dir


def batch_options(fn):
    """Adds ``--attack-batch``, ``--predict-batch``, ``--corrector-batch``, ``--adaptive-batch`` and
    ``--explain-batch`` (default: the setup's); lower them if the device runs out of memory."""
    helps = {
        "attack_batch": "images per compiled attack call (logit stores; another value makes other "
        "stores: PGD/MIM random starts depend on it), or auto: the largest up to "
        f"{pipeline.DEFAULT_ATTACK_BATCH} that fits the device [default: auto]",
        "predict_batch": "images per clean-prediction call, or auto: the largest up to "
        f"{pipeline.DEFAULT_PREDICT_BATCH} that fits the device [default: auto]",
        "corrector_batch": "corrector training batch (another value trains another corrector) "
        f"[default: {pipeline.DEFAULT_CORRECTOR.batch_size}]",
        "adaptive_batch": f"images per adaptive-attack call [default: {adaptive.AdaptiveConfig.batch_size}]",
        "explain_batch": f"logit rows per supporting-score call [default: {explain.SCORES_CHUNK_SIZE}]",
    }
    for name in reversed(BATCH_OPTIONS):
        option = f"--{name.replace('_', '-')}"
        kind, metavar = (BatchSize(), "N|auto") if name in AUTO_BATCHES else (int, "N")
        fn = click.option(option, name, type=kind, default=None, metavar=metavar, help=helps[name])(fn)
    return fn


def with_batches(setup: Setup, **batches: int | None) -> Setup:
    """``setup`` with the batch sizes given (None: keep its own); ``corrector_batch`` sets
    ``setup.corrector.batch_size``.

    Raises:
      JaxlogitError: a size that is not an integer >= 1.
    """
    given = {name: value for name, value in batches.items() if value is not None}
    if "corrector_batch" in given:
        size = _validate.positive_int("--corrector-batch", given.pop("corrector_batch"))
        given["corrector"] = dataclasses.replace(setup.corrector, batch_size=size)
    return dataclasses.replace(setup, **given)


def cli_main(name: str, run: Callable[[Setup, pathlib.Path], str], doc: str) -> Callable:
    """A click command ``python -m experiments.NAME [--dataset ...]`` that calls ``run``.

    ``run(setup, out_dir)`` does the work, writes its report and returns the Markdown it printed.
    """

    @click.command(help=doc)
    @click.option(
        "--dataset",
        default=data.DEFAULT_DATASET,
        show_default=True,
        callback=lambda ctx, param, value: data.get(value).name,
        help=f"A registered dataset: {', '.join(data.names())} (or one added with jaxlogit.data.register).",
    )
    @click.option(
        "--data-dir",
        envvar="JAXLOGIT_DATA",
        default=None,
        help="Dataset folder (ImageNet: TFDS data dir or image folders).",
    )
    @click.option(
        "--weights-dir",
        default=None,
        help="ImageNet only: folder of `jaxlogit convert` outputs, one per arch.",
    )
    @click.option(
        "--cache-dir",
        envvar="JAXLOGIT_CACHE",
        default=None,
        help="Artifact cache (default ~/.cache/jaxlogit).",
    )
    @click.option(
        "--train-limit",
        type=click.IntRange(min=1),
        default=None,
        help="Training images whose logits train the correctors [default: 4000 fashion_mnist, all imagenet].",
    )
    @click.option("--out", default=None, help=f"Run directory (default runs/{name}-DATASET).")
    @batch_options
    @progress_options
    def command(dataset, data_dir, weights_dir, cache_dir, train_limit, out, **batches):
        limit = {} if train_limit is None else {"train_limit": train_limit}
        setup = with_batches(
            default_setup(dataset, data_dir=data_dir, weights_dir=weights_dir, cache_dir=cache_dir, **limit),
            **batches,
        )
        out_dir = pathlib.Path(out or f"runs/{name}-{dataset}")
        _xla.enable_compilation_cache(paths.cache_root(cache_dir))
        pipeline.CHOSEN_BATCHES.clear()  # the report records this run's
        start = time.perf_counter()
        with progress.run_events(out_dir / progress.EVENTS_FILE):  # every stage's events, for `tail -f`
            run(setup, out_dir)
        click.echo(f"\nwrote {out_dir}/{name}.md and .json  ({time.perf_counter() - start:.0f} s)")

    def main(argv=None):
        try:
            command.main(args=argv, standalone_mode=False)
        except JaxlogitError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except click.ClickException as err:
            click.echo(f"error: {err.format_message()} (see --help)", err=True)
            sys.exit(err.exit_code)

    return main


def dumps(obj) -> str:
    """JSON for reports (numpy scalars included)."""
    return json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))


class Rows(dict):
    """Logit arrays of a set of evaluation images: ``clean_logits``, ``adv_logits``, ``labels``, ..."""


def selected_logits(
    setup: Setup, backbone: training.Backbone, attack: pipeline.AttackConfig, *, progress: bool = True
) -> Rows:
    """Logits of the selected set under ``attack``: sliced from a complete full-set store if
    one is cached (Table 1 made it), else attacked on the selected images only."""
    selected = selected_indices(setup, progress=progress)
    split_name = setup.test_split_name
    return Rows(
        pipeline.selected_logits(
            backbone,
            attack,
            load_split(setup, split_name),
            split_name,
            selected,
            limit=setup.test_limit,
            cache=setup.cache_dir,
            progress=progress,
            batch_size=setup.attack_batch,
        )
    )
