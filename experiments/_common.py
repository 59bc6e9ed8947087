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

from jaxlogit import (
    _validate,
    _xla,
    adaptive,
    data,
    explain,
    models,
    paths,
    pipeline,
    progress,
    store,
    training,
)
from jaxlogit.cli._app import progress_options
from jaxlogit.errors import JaxlogitError

COMPACT = ("vgg_compact", "resnet_compact", "densenet_compact")
IMAGENET = ("vgg16_bn", "resnet50", "densenet121")


BATCH_OPTIONS = ("attack_batch", "predict_batch", "corrector_batch", "adaptive_batch", "explain_batch")
"""The batch sizes every experiment takes (``--attack-batch N``, ...); ``corrector_batch`` is
``Setup.corrector.batch_size``."""


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
      attack_batch: images per compiled attack call (logit stores, the selected set's logits).
      predict_batch: images per compiled call of clean predictions (the selected set).
      adaptive_batch: images per compiled call of the adaptive attacks (``experiments.adaptive``).
      explain_batch: logit rows per compiled call of the supporting scores (explanations).
      data_dir, weights_dir, cache_dir: where data, converted ImageNet weights and the cache are.
      image_size: side of the square images of a resizable dataset (ImageNet; None: its 224).
      subset_seed: the seed of the class-balanced ``train_limit``/``test_limit`` subsets (ImageNet).
      selected_file: a file listing the selected set's evaluation file names, one per line, used
        instead of the computed selected set (None: computed).
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
    attack_batch: int = pipeline.DEFAULT_ATTACK_BATCH
    predict_batch: int = pipeline.DEFAULT_PREDICT_BATCH
    adaptive_batch: int = adaptive.AdaptiveConfig.batch_size
    explain_batch: int = explain.SCORES_CHUNK_SIZE
    image_size: int | None = None
    subset_seed: int = 0
    selected_file: str | None = None

    def __post_init__(self):
        for name in ("attack_batch", "predict_batch", "adaptive_batch", "explain_batch"):
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
    """``train`` or the evaluation split of ``setup.dataset``: on a dataset with
    ``balanced_subsets`` (ImageNet) already cut to ``train_limit``/``test_limit`` (``data.limited``)."""
    split = data.load(setup.dataset, name, data_dir=setup.data_dir, image_size=setup.image_size)
    limit = setup.train_limit if name == setup.train_split_name else setup.test_limit
    return data.limited(
        split, limit, balanced=data.get(setup.dataset).balanced_subsets, seed=setup.subset_seed
    )


def pipeline_limit(setup: Setup, which: str) -> int | None:
    """The ``limit`` the pipeline takes on ``which`` ('train' or 'test'): the first N images, or
    None where ``load_split`` already took a balanced subset."""
    if data.get(setup.dataset).balanced_subsets:
        return None
    return setup.train_limit if which == "train" else setup.test_limit


def subset_statement(setup: dict) -> str:
    """One line for every report: which training and evaluation images ran, and the selected set's source.

    Args:
      setup: ``dataclasses.asdict`` of a ``Setup``.
    """
    balanced = data.get(setup["dataset"]).balanced_subsets
    seed = setup.get("subset_seed", 0)
    train = data.subset_rule(balanced, setup["train_limit"], seed)
    test = data.subset_rule(balanced, setup["test_limit"], seed)
    selected = setup.get("selected_file")
    chosen = f"the names listed in {selected}" if selected else "computed"
    return f"Subsets: training images: {train}; evaluation images: {test}; selected set: {chosen}."


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
    limit = pipeline_limit(setup, which)
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
        limit=pipeline_limit(setup, "train"),
        cache=setup.cache_dir,
        progress=progress,
        batch_size=setup.attack_batch,
    )


def selected_indices(setup: Setup, *, progress: bool = True) -> np.ndarray:
    """The paper's *selected* set: ``per_class`` evaluation images per class that the ResNet gets
    right, or the images named in ``setup.selected_file``."""
    split = load_split(setup, setup.test_split_name)
    if setup.selected_file:
        limit = pipeline_limit(setup, "test")
        return data.indices_of_names(
            split.file_names[:limit],
            data.read_name_list(setup.selected_file),
            f"--selected {setup.selected_file}",
            setup.test_split_name,
        )
    backbone = load_backbone(setup, setup.resnet, progress=progress)
    return pipeline.selected_indices(
        backbone,
        split,
        per_class=setup.per_class,
        limit=pipeline_limit(setup, "test"),
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
    """Writes ``NAME.md`` and ``NAME.json`` (and figures) atomically into ``out_dir``."""
    if "setup" in payload:  # every experiment's report says which images it ran on
        statement = subset_statement(payload["setup"])
        markdown, payload = f"{markdown}\n\n{statement}", {**payload, "subsets": statement}
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{name}.md"
    paths.write_text_atomic(md, markdown + "\n")
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
        f"stores: PGD/MIM random starts depend on it) [default: {pipeline.DEFAULT_ATTACK_BATCH}]",
        "predict_batch": f"images per clean-prediction call [default: {pipeline.DEFAULT_PREDICT_BATCH}]",
        "corrector_batch": "corrector training batch (another value trains another corrector) "
        f"[default: {pipeline.DEFAULT_CORRECTOR.batch_size}]",
        "adaptive_batch": f"images per adaptive-attack call [default: {adaptive.AdaptiveConfig.batch_size}]",
        "explain_batch": f"logit rows per supporting-score call [default: {explain.SCORES_CHUNK_SIZE}]",
    }
    for name in reversed(BATCH_OPTIONS):
        option = f"--{name.replace('_', '-')}"
        fn = click.option(option, name, type=int, default=None, metavar="N", help=helps[name])(fn)
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


def _backbones(ctx, param, value: str | None) -> tuple[str, ...] | None:
    """``--backbones a,b,c``: registered archs, one of them a ResNet (Tables 2-3, the selected set)."""
    if value is None:
        return None
    archs = tuple(a.strip() for a in value.split(",") if a.strip())
    unknown = [a for a in archs if a not in models.names()]
    if unknown or not any("resnet" in a for a in archs):
        raise click.BadParameter(
            f"{value!r}: list archs of `jaxlogit models`, comma-separated, one of them a ResNet "
            f"(e.g. {','.join(IMAGENET)})"
        )
    return archs


def setup_options(fn):
    """The size and protocol options of every experiment: ``--test-limit``, ``--per-class``,
    ``--image-size``, ``--backbones``, ``--subset-seed``, ``--hidden``, ``--epochs``, ``--holdout``,
    ``--selected`` (None: the dataset's default setup)."""
    options = [
        click.option(
            "--test-limit",
            type=click.IntRange(min=1),
            default=None,
            help="Evaluation images (ImageNet: a class-balanced subset drawn with --subset-seed; "
            "fashion_mnist: the first N) [default: all].",
        ),
        click.option(
            "--per-class",
            type=click.IntRange(min=1),
            default=None,
            help="Images per class of the selected set [default: 100 fashion_mnist, 1 imagenet].",
        ),
        click.option(
            "--image-size",
            type=click.IntRange(min=32),
            default=None,
            help="ImageNet only: side of the centre crop, cut from the image resized to SIZE*256/224 "
            "(the torchvision backbones pool adaptively) [default: 224, the paper's].",
        ),
        click.option(
            "--backbones",
            default=None,
            callback=_backbones,
            metavar="A,B,C",
            help="Archs of Table 1 and Figure 1, one a ResNet [default: the dataset's three].",
        ),
        click.option(
            "--subset-seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of the class-balanced --train-limit/--test-limit subsets (ImageNet).",
        ),
        click.option(
            "--hidden", type=click.IntRange(min=0), default=None, help="Corrector width D; 0: C -> C."
        ),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Corrector epochs."),
        click.option(
            "--holdout",
            type=click.FloatRange(0, 1, max_open=True),
            default=None,
            help="Share of the training logits held out to pick the corrector's best epoch; 0 trains on "
            "all and keeps the last epoch, as the paper [default: 0.1].",
        ),
        click.option(
            "--selected",
            "selected_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="A file listing the selected set's evaluation file names, one per line "
            "(e.g. ILSVRC2012_val_00000001.JPEG), instead of the computed one.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def apply_setup_options(setup: Setup, *, hidden, epochs, holdout, **given) -> Setup:
    """``setup`` with the values of ``setup_options`` that were given (None: keep the setup's)."""
    corrector = {}
    if hidden is not None:
        corrector["hidden"] = hidden or None
    if epochs is not None:
        corrector["epochs"] = epochs
    if holdout is not None:
        corrector["holdout_fraction"] = holdout
    given = {k: v for k, v in given.items() if v is not None}
    return dataclasses.replace(setup, corrector=dataclasses.replace(setup.corrector, **corrector), **given)


def cli_main(
    name: str,
    run: Callable[..., str],
    doc: str,
    options: tuple[Callable, ...] = (),
    configure: Callable[..., dict] | None = None,
) -> Callable:
    """A click command ``python -m experiments.NAME [--dataset ...]`` that calls ``run``.

    ``run(setup, out_dir)`` does the work, writes its report and returns the Markdown it printed.
    ``options`` are the experiment's own click options; ``configure(**their values)`` returns
    the keyword arguments they add to ``run``.
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
    @setup_options
    @batch_options
    @progress_options
    def command(dataset, data_dir, weights_dir, cache_dir, train_limit, out, **options):
        limit = {} if train_limit is None else {"train_limit": train_limit}
        batches = {k: options.pop(k) for k in BATCH_OPTIONS}
        own = {name: options.pop(name) for name in own_names}
        run_kwargs = configure(**own) if configure else {}
        setup = with_batches(
            default_setup(dataset, data_dir=data_dir, weights_dir=weights_dir, cache_dir=cache_dir, **limit),
            **batches,
        )
        setup = apply_setup_options(setup, **options)
        out_dir = pathlib.Path(out or f"runs/{name}-{dataset}")
        _xla.enable_compilation_cache(paths.cache_root(cache_dir))
        start = time.perf_counter()
        with progress.run_events(out_dir / progress.EVENTS_FILE):  # every stage's events, for `tail -f`
            run(setup, out_dir, **run_kwargs)
        click.echo(f"\n{subset_statement(dataclasses.asdict(setup))}")
        click.echo(f"\nwrote {out_dir}/{name}.md and .json  ({time.perf_counter() - start:.0f} s)")

    own_names = []
    for option in options:  # the experiment's own options, added to the command
        option(command)
        own_names.append(command.params[-1].name)

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
            limit=pipeline_limit(setup, "test"),
            cache=setup.cache_dir,
            progress=progress,
            batch_size=setup.attack_batch,
        )
    )
