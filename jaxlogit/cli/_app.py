"""The root click group and options shared by several commands."""

from __future__ import annotations

import functools
import pathlib

import click

from jaxlogit import _xla, attacks, batch_fit, data, distributed, models, paths, progress, stats, training
from jaxlogit.errors import JaxlogitError


def job_options(*, leave: bool):
    """Adds --coordinator HOST:PORT, --num-processes N and --process-id I (default:
    ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``, ``$JAX_PROCESS_ID``); the command joins that
    job (``jaxlogit.distributed``) before its body runs and, with ``leave``, leaves it when the body
    returns (a barrier: no process exits under a peer still working). A failed process exits at once."""

    def decorate(fn):
        @click.option(
            "--coordinator",
            default=None,
            metavar="HOST:PORT",
            help="Process 0's address, to run on several hosts (default: $JAX_COORDINATOR_ADDRESS).",
        )
        @click.option(
            "--num-processes",
            type=int,
            default=None,
            metavar="N",
            help="Processes (hosts) running this command together (default: $JAX_NUM_PROCESSES, else 1).",
        )
        @click.option(
            "--process-id",
            type=int,
            default=None,
            metavar="I",
            help="This process's index in [0, N) (default: $JAX_PROCESS_ID).",
        )
        @functools.wraps(fn)
        def wrapper(*args, coordinator, num_processes, process_id, **kwargs):
            distributed.initialize(coordinator, num_processes, process_id)  # before any jax computation
            result = fn(*args, **kwargs)
            if leave:
                distributed.shutdown()
            return result

        return wrapper

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="jaxlogit")
@job_options(leave=False)  # the group's body runs before the subcommand's; _leave_job after it
def cli() -> None:
    """jaxlogit: defend adversarial attacks by correcting logits (arXiv 1906.10973), in JAX.

    The embedded default runs on Fashion-MNIST with no download; ImageNet models come from
    torchvision weights via `jaxlogit convert`. On several hosts, run the same command on each with
    --coordinator HOST:PORT --num-processes N --process-id I (before the subcommand).
    """


@cli.result_callback()
def _leave_job(result, **options) -> None:
    """After a command succeeded: leaves the job (a no-op in one process)."""
    distributed.shutdown()


def _set_log_every(ctx, param, value):
    if value is not None:
        progress.configure(log_every=value)


def _set_quiet(ctx, param, value):
    if value:
        progress.configure(quiet=True)


def progress_options(fn):
    """Adds --log-every SECONDS ($JAXLOGIT_LOG_EVERY) and --quiet, which set ``jaxlogit.progress``."""
    fn = click.option(
        "--quiet",
        is_flag=True,
        expose_value=False,
        callback=_set_quiet,
        help="No progress bars or lines (events.jsonl files are still written).",
    )(fn)
    return click.option(
        "--log-every",
        type=click.FloatRange(min=0, min_open=True),
        envvar="JAXLOGIT_LOG_EVERY",
        default=None,
        expose_value=False,
        callback=_set_log_every,
        metavar="SECONDS",
        help="When stderr is not a terminal, print a progress line every SECONDS "
        f"(default: $JAXLOGIT_LOG_EVERY or {progress.DEFAULT_LOG_EVERY:g}).",
    )(fn)


def common_options(fn):
    """Adds --data-dir and --cache-dir (also read from $JAXLOGIT_DATA / $JAXLOGIT_CACHE), the progress
    options, and turns on JAX's compilation cache under the cache root before the command runs."""

    @click.option(
        "--data-dir",
        envvar="JAXLOGIT_DATA",
        default=None,
        type=click.Path(),
        help="Dataset folder (default: $JAXLOGIT_DATA, then the system copy).",
    )
    @click.option(
        "--cache-dir",
        envvar="JAXLOGIT_CACHE",
        default=None,
        type=click.Path(),
        help="Where trained models, logit stores and correctors are cached "
        "(default: $JAXLOGIT_CACHE or ~/.cache/jaxlogit).",
    )
    @progress_options
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _xla.enable_compilation_cache(paths.cache_root(kwargs.get("cache_dir")))
        return fn(*args, **kwargs)

    return wrapper


class DatasetName(click.ParamType):
    """A registered dataset's name (``jaxlogit.data``), read when parsing, so datasets registered
    after import are accepted too; an unknown name is a one-line usage error listing them."""

    name = "dataset"

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(data.names())}]"

    def convert(self, value, param, ctx) -> str:
        try:
            return data.get(value).name
        except JaxlogitError as err:
            self.fail(str(err), param, ctx)


def dataset_option(fn):
    """Adds --dataset (default ``data.DEFAULT_DATASET``): a name registered in ``jaxlogit.data``."""
    return click.option(
        "--dataset",
        type=DatasetName(),
        default=data.DEFAULT_DATASET,
        show_default=True,
        help="A registered dataset (see jaxlogit.data.names()).",
    )(fn)


def image_size_option(fn):
    """Adds --image-size: the side of ImageNet's centre crop (default: the paper's 224)."""
    return click.option(
        "--image-size",
        type=click.IntRange(min=32),
        default=None,
        help="ImageNet: side of the centre crop, cut from the image resized to SIZE*256/224 (the "
        "torchvision backbones pool adaptively) [default: 224, the paper's].",
    )(fn)


def subset_seed_option(limits: str):
    """Adds --subset-seed: the seed of the class-balanced subsets that the options ``limits`` take."""
    return click.option(
        "--subset-seed",
        type=int,
        default=0,
        show_default=True,
        help=f"ImageNet: seed of the class-balanced subsets that {limits} take.",
    )


def source_options(fn):
    """Adds --weights-dir (converted ImageNet weights), --image-size and --subset-seed: where a
    command's backbone and images come from on a dataset with converted backbones (ImageNet)."""
    fn = subset_seed_option("--limit/--n")(fn)
    fn = image_size_option(fn)
    return click.option(
        "--weights-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="ImageNet: folder of `jaxlogit convert` outputs, one per arch (DIR/resnet50, ...).",
    )(fn)


def load_split(
    dataset: str, split_name: str, data_dir, limit: int | None = None, *, image_size=None, subset_seed=0
) -> tuple[data.Split, int | None]:
    """``(split, limit)``: on a dataset with ``balanced_subsets`` (ImageNet) the class-balanced
    subset of ``limit`` images drawn with ``subset_seed`` and None, else the whole split and
    ``limit`` (the pipeline keeps the first ``limit`` images)."""
    split = data.load(dataset, split_name, data_dir=data_dir, image_size=image_size)
    if not data.get(dataset).balanced_subsets:
        return split, limit
    return data.limited(split, limit, balanced=True, seed=subset_seed), None


def trained_backbone(
    arch: str,
    dataset: str,
    data_dir,
    cache_dir,
    config: training.BackboneConfig | None = None,
    rebuild: bool = False,
    weights_dir=None,
) -> training.Backbone:
    """The compact ``arch`` trained on ``dataset`` with ``config`` (default: ``training.default_config``),
    from the cache or trained now; on a dataset with converted backbones (ImageNet), the
    `jaxlogit convert` output ``weights_dir/arch``.

    Raises:
      JaxlogitError: unknown ``arch`` or one of another kind than the dataset's, or no
        ``weights_dir`` (or no checkpoint in it) for converted backbones.
    """
    spec = data.get(dataset)
    if spec.backbones != data.COMPACT:
        names = [n for n in models.names() if models.spec(n).kind == spec.backbones]
        if arch not in names:
            raise JaxlogitError(
                f"--arch {arch!r} on --dataset {dataset}: choose one of {', '.join(names)} "
                "(converted with `jaxlogit convert` into --weights-dir)"
            )
        if not weights_dir:
            raise JaxlogitError(
                f"--dataset {dataset} uses converted weights: pass --weights-dir DIR holding DIR/{arch} "
                f"(`jaxlogit convert --arch {arch} --weights FILE.pth --out DIR/{arch}`)"
            )
        return training.load_backbone(pathlib.Path(weights_dir) / arch)
    check_arch(arch, compact_only=True)
    config = training.default_config(arch, dataset=dataset) if config is None else config
    return training.ensure_backbone(config, data_dir=data_dir, cache=cache_dir, rebuild=rebuild)


def check_arch(arch: str, *, compact_only: bool = False) -> str:
    """Returns ``arch`` if it names a backbone, else raises a one-line error listing them."""
    names = [n for n in models.names() if not compact_only or models.spec(n).kind == data.COMPACT]
    if arch not in names:
        raise JaxlogitError(
            f"unknown arch {arch!r}: choose one of {', '.join(names)} (see `jaxlogit models`)"
        )
    return arch


class AttackName(click.ParamType):
    """A registered attack's name (``jaxlogit.attacks``), read when parsing, so attacks registered
    after import are accepted too; an unknown name is a one-line usage error listing them.

    Args:
      extra: other accepted words (``all`` for ``jaxlogit bench``).
    """

    name = "attack"

    def __init__(self, *extra: str):
        self.extra = extra

    def choices(self) -> tuple[str, ...]:
        """The accepted names: the registered attacks, then ``extra``."""
        return (*attacks.names(), *self.extra)

    def get_metavar(self, param, ctx=None) -> str:
        return f"[{'|'.join(self.choices())}]"

    def convert(self, value, param, ctx) -> str:
        if value in self.extra:
            return value
        try:
            return attacks.get(value).name
        except JaxlogitError as err:
            tail = f" or {' or '.join(self.extra)}" if self.extra else ""
            self.fail(f"{err}{tail}", param, ctx)


def _checked_workers(ctx, param, value):
    return None if value is None else data.check_workers(value)


def data_workers_option(fn):
    """Adds ``--data-workers N``, passed as ``data_workers``: processes decoding images from disk
    while the device computes (``data.iter_batches``; None: ``data.default_workers()``). A negative
    number is a one-line error."""
    return click.option(
        "--data-workers",
        "data_workers",
        type=int,
        default=None,
        metavar="N",
        callback=_checked_workers,
        help="Processes decoding images from disk while the device computes (0: this process; in-memory "
        "datasets take none; no result depends on it) [default: $JAXLOGIT_DATA_WORKERS, else the CPU "
        f"cores but one, at most {data.MAX_DEFAULT_WORKERS}].",
    )(fn)


class BatchSize(click.ParamType):
    """A batch size: an integer >= 1, or ``auto``, the largest that fits (``jaxlogit.batch_fit``)."""

    name = "batch"

    def convert(self, value, param, ctx) -> int | str:
        if value == batch_fit.AUTO:
            return value
        try:
            size = int(value)
        except (TypeError, ValueError):
            size = 0
        if size < 1:
            self.fail(f"{value!r}: pass an integer >= 1 or {batch_fit.AUTO}", param, ctx)
        return size


def batch_option(kind: str, default: int | str | None, what: str, *aliases: str):
    """Adds ``--KIND-batch N`` (and ``aliases``), passed as ``KIND_batch``: how many items one
    compiled call takes (``what`` says which, e.g. "images per attack call"). With the default
    ``auto``, the option also takes ``auto``: the largest batch that fits the device."""
    shown = "" if default is None else f" [default: {default}]"
    auto = default == batch_fit.AUTO
    return click.option(
        f"--{kind}-batch",
        *aliases,
        f"{kind}_batch",
        type=BatchSize() if auto else click.IntRange(min=1),
        default=default,
        metavar="N|auto" if auto else "N",
        help=f"{what}; lower it if the device runs out of memory{shown}.",
    )


def proportion(count: int, n: int) -> str:
    """``count / n`` with its 95% Wilson interval, as the commands print it: ``0.9054 [0.8996, 0.9109]``."""
    low, high = stats.wilson_interval(int(count), int(n))
    return f"{count / n:.4f} [{low:.4f}, {high:.4f}]"
