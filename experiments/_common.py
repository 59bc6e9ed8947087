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
import jax
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
    stats,
    store,
    training,
)
from jaxlogit.cli._app import (
    BatchSize,
    image_size_option,
    job_options,
    progress_options,
    subset_seed_option,
)
from jaxlogit.errors import JaxlogitError

COMPACT = ("vgg_compact", "resnet_compact", "densenet_compact")
IMAGENET = ("vgg16_bn", "resnet50", "densenet121")


BATCH_OPTIONS = (
    "attack_batch",
    "predict_batch",
    "corrector_batch",
    "adaptive_batch",
    "explain_batch",
    "data_workers",
)
"""The batch sizes every experiment takes (``--attack-batch N``, ...), and how many processes decode
their images (``--data-workers N``); ``corrector_batch`` is ``Setup.corrector.batch_size``."""
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
      seeds: correctors (seeds 0, 1, ...) behind each corrected number of Tables 1-2 (``--seeds``):
        they report the mean +- sd; the other experiments use seed 0's.
      attack_batch: images per device per compiled attack call (logit stores, the selected set's
        logits), or ``auto``: the largest up to ``pipeline.DEFAULT_ATTACK_BATCH`` that fits the device.
      predict_batch: images per device per compiled call of clean predictions (the selected set), or
        ``auto``.
      adaptive_batch: images per compiled call of the adaptive attacks (``experiments.adaptive``).
      explain_batch: logit rows per compiled call of the supporting scores (explanations).
      data_workers: processes decoding images from disk while the device computes (0: this
        process; None: ``data.default_workers()``); in-memory datasets take none. No result depends on it.
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
    attack_batch: int | str = pipeline.AUTO
    predict_batch: int | str = pipeline.AUTO
    adaptive_batch: int = adaptive.AdaptiveConfig.batch_size
    explain_batch: int = explain.SCORES_CHUNK_SIZE
    seeds: int = 3
    data_workers: int | None = None
    image_size: int | None = None
    subset_seed: int = 0
    selected_file: str | None = None

    def __post_init__(self):
        for name in ("attack_batch", "predict_batch", "adaptive_batch", "explain_batch", "seeds"):
            if getattr(self, name) != pipeline.AUTO or name not in AUTO_BATCHES:
                _validate.positive_int(f"--{name.replace('_', '-')}", getattr(self, name))
        data.check_workers(self.data_workers)

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
      setup: ``dataclasses.asdict`` of a ``Setup``; a ``train_rule`` entry, where an experiment
        varies the training images per row, replaces the training rule.
    """
    balanced = data.get(setup["dataset"]).balanced_subsets
    seed = setup.get("subset_seed", 0)
    train = setup.get("train_rule") or data.subset_rule(balanced, setup["train_limit"], seed)
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
        data_workers=setup.data_workers,
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
        data_workers=setup.data_workers,
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
        data_workers=setup.data_workers,
    )


CORRECTED = ("clean_corrected", "adv_corrected")
"""The keys of ``accuracies`` that depend on the corrector (averaged over seeds)."""
BOOTSTRAP_KEY = 0
"""Seed of the ``jax.random`` key of every paired bootstrap in the reports."""


def _percent(correct: np.ndarray) -> float:
    return round(100.0 * float(np.mean(correct)), 2) if correct.size else float("nan")


def _with_intervals(correct: dict[str, np.ndarray]) -> dict:
    """Percent accuracy per key, and each one's Wilson 95% interval under ``interval``."""
    out = {name: _percent(c) for name, c in correct.items()}
    out["interval"] = {name: stats.accuracy(c).rounded()[1:] for name, c in correct.items()}
    return out


def accuracies(test_store, corrector: pipeline.TrainedCorrector, rows: np.ndarray | None = None) -> dict:
    """Percent accuracy on clean and adversarial logits, without and with correction, with 95%
    intervals, on all images and on the images the attack fooled.

    Args:
      test_store: logits of the evaluation images (a ``LogitStore`` or ``Rows``) with ``success``.
      corrector: the corrector to apply.
      rows: a subset of rows (e.g. the selected set), or None for all.

    Returns:
      ``clean``, ``clean_corrected``, ``adv``, ``adv_corrected`` (percent), ``n``, ``interval``
      (name -> Wilson ``[low, high]``), ``attacked`` (the same on the rows whose stored
      ``success`` is True, with ``n`` and ``share``: percent of rows attacked successfully),
      ``clean_drop`` (clean minus clean corrected) and ``recovered`` (adv corrected minus adv):
      ``[points, low, high]`` paired bootstrap 95% intervals (key ``BOOTSTRAP_KEY``).
    """
    pick = (lambda a: np.asarray(a)) if rows is None else (lambda a: np.asarray(a)[rows])
    clean, adv, labels, success = (
        pick(test_store["clean_logits"]),
        pick(test_store["adv_logits"]),
        pick(test_store["labels"]),
        pick(test_store["success"]).astype(bool),
    )
    correct = {
        "clean": clean.argmax(-1) == labels,
        "clean_corrected": corrector.predict_classes(clean) == labels,
        "adv": adv.argmax(-1) == labels,
        "adv_corrected": corrector.predict_classes(adv) == labels,
    }
    key = jax.random.key(BOOTSTRAP_KEY)
    attacked = _with_intervals({name: c[success] for name, c in correct.items()})
    return {
        **_with_intervals(correct),
        "n": int(len(labels)),
        "attacked": {**attacked, "n": int(success.sum()), "share": _percent(success)},
        "clean_drop": stats.paired_bootstrap_difference(
            correct["clean"], correct["clean_corrected"], key=key
        ).rounded(),
        "recovered": stats.paired_bootstrap_difference(
            correct["adv_corrected"], correct["adv"], key=key
        ).rounded(),
    }


def _seed_mean(results: list[dict], n: int) -> dict:
    """The corrected keys of ``results`` (one per seed): mean, sd and the Wilson interval at the
    mean; the other keys are the same for every seed (no corrector) and taken from the first."""
    out = dict(results[0])
    out["interval"] = dict(out["interval"])
    out["sd"] = {}
    for name in CORRECTED:
        values = [r[name] for r in results]
        mean, sd = stats.mean_sd(values)
        out[name], out["sd"][name] = round(mean, 2), round(sd, 2)
        if n and not np.isnan(mean):
            low, high = stats.wilson_interval(round(mean * n / 100), n)
            out["interval"][name] = [round(100 * low, 2), round(100 * high, 2)]
    out["seeds"] = {name: [r[name] for r in results] for name in CORRECTED}
    return out


def over_seeds(results: list[dict]) -> dict:
    """``accuracies`` of one row under several seeds' correctors, as one: the corrected numbers
    (all images and attacked only) are the mean over seeds, with ``sd`` and ``seeds`` (the values);
    the paired differences are those of the first seed's corrector."""
    out = _seed_mean(results, results[0]["n"])
    out["attacked"] = _seed_mean([r["attacked"] for r in results], results[0]["attacked"]["n"])
    return out


def correctors_for(
    setup: Setup, backbone: training.Backbone, attack: pipeline.AttackConfig
) -> list[pipeline.TrainedCorrector]:
    """``setup.seeds`` correctors of ``attack`` (seeds 0, 1, ...; seed 0 is ``corrector_for``'s)."""
    return [
        corrector_for(setup, backbone, attack, dataclasses.replace(setup.corrector, seed=seed))
        for seed in range(setup.seeds)
    ]


def seed_accuracies(test_store, correctors: list, rows: np.ndarray | None = None) -> dict:
    """``accuracies`` with each corrector, averaged by ``over_seeds``."""
    return over_seeds([accuracies(test_store, c, rows) for c in correctors])


def cell(result: dict, name: str) -> str:
    """A table cell: ``90.58 [88.6, 92.3]``, or ``75.40 ± 1.20 [72.6, 78.0]`` over seeds."""
    low, high = result["interval"][name]
    sd = result.get("sd", {}).get(name)
    spread = "" if sd is None or len(result["seeds"][name]) < 2 else f" ± {sd:.2f}"
    return f"{result[name]:.2f}{spread} [{low:.1f}, {high:.1f}]"


def percent_cell(value: float, n: int) -> str:
    """A percentage of ``n`` images with its Wilson 95% interval: ``76.40 [73.7, 78.9]``."""
    low, high = stats.wilson_interval(round(value * n / 100), n)
    return f"{value:.2f} [{100 * low:.1f}, {100 * high:.1f}]"


def difference(estimate: list) -> str:
    """A paired difference ``[points, low, high]`` as ``-16.90 [-19.1, -14.7]``."""
    return stats.format_estimate(estimate)


INTERVALS_NOTE = (
    "Brackets: 95% intervals (Wilson; over seeds, Wilson at the mean with the sd after ±; "
    "differences: paired bootstrap over the images, 2,000 resamples)."
)


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
    if "setup" in payload:  # every experiment's report says which images it ran on
        statement = subset_statement(payload["setup"])
        markdown, payload = f"{markdown}\n\n{statement}", {**payload, "subsets": statement}
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
    ``--explain-batch`` (default: the setup's; lower them if the device runs out of memory), and
    ``--data-workers``."""
    helps = {
        "attack_batch": "images per device per compiled attack call (logit stores; speed and memory "
        "only: each image's random start has its own key), or auto: the largest up to "
        f"{pipeline.DEFAULT_ATTACK_BATCH} that fits the device [default: auto]",
        "predict_batch": "images per device per clean-prediction call, or auto: the largest up to "
        f"{pipeline.DEFAULT_PREDICT_BATCH} that fits the device [default: auto]",
        "corrector_batch": "corrector training batch (another value trains another corrector) "
        f"[default: {pipeline.DEFAULT_CORRECTOR.batch_size}]",
        "adaptive_batch": f"images per adaptive-attack call [default: {adaptive.AdaptiveConfig.batch_size}]",
        "explain_batch": f"logit rows per supporting-score call [default: {explain.SCORES_CHUNK_SIZE}]",
        "data_workers": "processes decoding images from disk while the device computes (0: this "
        "process; no result depends on it) [default: $JAXLOGIT_DATA_WORKERS, else the CPU cores but "
        f"one, at most {data.MAX_DEFAULT_WORKERS}]",
    }
    for name in reversed(BATCH_OPTIONS):
        option = f"--{name.replace('_', '-')}"
        kind, metavar = (BatchSize(), "N|auto") if name in AUTO_BATCHES else (int, "N")
        fn = click.option(option, name, type=kind, default=None, metavar=metavar, help=helps[name])(fn)
    return fn


def with_batches(setup: Setup, **batches: int | None) -> Setup:
    """``setup`` with the batch sizes (and ``data_workers``) given (None: keep its own);
    ``corrector_batch`` sets ``setup.corrector.batch_size``.

    Raises:
      JaxlogitError: a size that is not an integer >= 1, or workers that are not >= 0.
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
        image_size_option,
        click.option(
            "--backbones",
            default=None,
            callback=_backbones,
            metavar="A,B,C",
            help="Archs of Table 1 and Figure 1, one a ResNet [default: the dataset's three].",
        ),
        subset_seed_option("--train-limit/--test-limit"),
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
    @click.option(
        "--seeds",
        type=click.IntRange(min=1),
        default=None,
        help="Corrector seeds behind each corrected number of Tables 1-2 (mean ± sd) [default: 3].",
    )
    @click.option("--out", default=None, help=f"Run directory (default runs/{name}-DATASET).")
    @setup_options
    @batch_options
    @progress_options
    @job_options(leave=True)
    def command(dataset, data_dir, weights_dir, cache_dir, train_limit, seeds, out, **options):
        limit = {} if train_limit is None else {"train_limit": train_limit}
        limit.update({} if seeds is None else {"seeds": seeds})
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
        pipeline.CHOSEN_BATCHES.clear()  # the report records this run's
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
            data_workers=setup.data_workers,
        )
    )
