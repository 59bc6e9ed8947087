"""``jaxlogit info``, ``jaxlogit models`` and ``jaxlogit convert``."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib

import click

from jaxlogit import _digest, _lock, data, models, paths
from jaxlogit.cli._app import check_arch, cli, common_options
from jaxlogit.data import _inventory
from jaxlogit.errors import JaxlogitError
from jaxlogit.models import _checkpoint

_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "tensorflow-datasets",
    "numpy",
    "torch",
    "torchvision",
    "torchattacks",
)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


_CACHE_KINDS = ("backbones", "logits", "correctors", "selected", "converted", "data", "xla")
_SHOWN_PER_KIND = 20


def _size(path: pathlib.Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _human(size: float) -> str:
    """``512 B``, ``2.5 kB``, ``1.2 GB`` (powers of 1000)."""
    unit = "B"
    for larger in ("kB", "MB", "GB"):
        if size < 1000:
            break
        size, unit = size / 1000, larger
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def _cached_artifacts(root: pathlib.Path) -> dict[str, list[tuple[str, int]]]:
    """``{kind: [(artifact name, bytes), ...]}`` under the cache root."""
    found = {}
    for kind in _CACHE_KINDS:
        folder = root / kind
        entries = sorted(folder.iterdir()) if folder.is_dir() else []
        found[kind] = [(p.name, _size(p)) for p in entries if not p.name.endswith(".lock")]
    return found


def _echo_datasets(data_dir) -> None:
    if data_dir is None:
        for spec in (data.get(name) for name in data.names()):
            if spec.find is not None:
                found = spec.find(None)
                click.echo(f"{spec.name}: {found if found else f'not found ({spec.install_hint})'}")
        click.echo(
            "imagenet: no --data-dir given (a TFDS data dir or a folder with val/<wnid>/ and train/<wnid>/)"
        )
        return
    found = _inventory.find_datasets(data_dir)
    click.echo(f"data dir: {data_dir}")
    if not found:
        click.echo(
            "  no dataset found (expected val/<wnid>/*.JPEG and train/<wnid>/, a TFDS data dir with "
            "imagenet2012 or fashion_mnist, or the Fashion-MNIST IDX files)"
        )
    for dataset in found:
        click.echo(f"  {dataset.name} ({dataset.layout}): {dataset.location}")
        for split in dataset.splits:
            classes = "? classes" if split.classes is None else f"{split.classes} classes"
            click.echo(f"    {split.name}: {split.images} images, {classes}")
    if not any(d.name == "fashion_mnist" for d in found):
        click.echo("  fashion_mnist: not found here")


def _echo_weights(weights_dir) -> None:
    click.echo(f"weights dir: {weights_dir}")
    directories = _checkpoint.find_checkpoints(weights_dir)
    if not directories:
        click.echo(
            "  no converted weights (make them with `jaxlogit convert --arch ARCH --weights FILE.pth "
            f"--out {weights_dir}/ARCH`)"
        )
    for directory in directories:
        try:
            summary = _checkpoint.summarize_checkpoint(directory)
        except JaxlogitError as err:
            click.echo(f"  {directory.name}: unreadable ({err})")
            continue
        digest = f"sha256 {summary.digest} ({summary.digest_origin})" if summary.digest else "no digest"
        click.echo(
            f"  {directory.name}: arch {summary.arch}, {summary.num_classes} classes, {digest}, "
            f"source {summary.source or 'unknown'}"
        )


def _echo_cache(cache_dir) -> None:
    root = paths.cache_root(cache_dir)
    artifacts = _cached_artifacts(root)
    total = sum(size for items in artifacts.values() for _, size in items)
    click.echo(f"cache: {root} ({_human(total)})")
    for kind, items in artifacts.items():
        click.echo(f"  {kind}: {len(items)}, {_human(sum(size for _, size in items))}")
        for name, size in items[:_SHOWN_PER_KIND]:
            click.echo(f"    {name}  {_human(size)}")
        if len(items) > _SHOWN_PER_KIND:
            click.echo(f"    ... and {len(items) - _SHOWN_PER_KIND} more")


@cli.command()
@click.option(
    "--weights-dir",
    default=None,
    type=click.Path(),
    help="Folder of `jaxlogit convert` outputs (one per arch) to describe.",
)
@common_options
def info(weights_dir, data_dir, cache_dir) -> None:
    """Show devices, package versions, the datasets and converted weights found, and the cache."""
    import jax

    devices = jax.devices()
    click.echo(
        "devices: "
        + ", ".join(f"{d.platform}:{d.id}" for d in devices)
        + f"; {len(devices)} device(s) in {jax.process_count()} process(es), "
        + f"{jax.local_device_count()} local"
    )
    click.echo("versions: " + ", ".join(f"{p} {_version(p)}" for p in _PACKAGES))
    _echo_datasets(data_dir)
    if weights_dir is not None:
        _echo_weights(weights_dir)
    _echo_cache(cache_dir)


@cli.command("models")
def models_cmd() -> None:
    """List the backbones: name, input shape, classes, description."""
    for name in models.names():
        spec = models.spec(name)
        shape = "x".join(str(s) for s in spec.input_shape)
        click.echo(f"{name:18s} {shape:10s} {spec.num_classes:5d} classes  {spec.description}")


def _load_state_dict(weights: str) -> dict:
    try:
        import torch
    except ImportError as err:
        raise JaxlogitError("reading .pth weights needs torch: pip install 'jaxlogit[torch]'") from err
    path = pathlib.Path(weights)
    if not path.is_file():
        raise JaxlogitError(f"weights file {weights} does not exist: pass a torchvision .pth state_dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file
        raise JaxlogitError(
            f"cannot read {weights} as a torch state_dict ({type(err).__name__}): pass a torchvision .pth "
            "file"
        ) from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise JaxlogitError(
            f"{weights} holds a {type(state).__name__}, not a state_dict: save model.state_dict()"
        )
    return state


@cli.command()
@click.option("--arch", required=True, help="vgg16, vgg16_bn, resnet50 or densenet121.")
@click.option("--weights", required=True, type=click.Path(), help="A torchvision state_dict (.pth).")
@click.option(
    "--out",
    required=True,
    type=click.Path(),
    help="Folder for the orbax checkpoint: new or empty (nothing else is ever overwritten).",
)
@click.option("--force", is_flag=True, help="Replace a checkpoint of the same --arch already at --out.")
def convert(arch, weights, out, force) -> None:
    """Convert torchvision weights to an orbax checkpoint that every command loads.

    The checkpoint is written beside --out and renamed into place when complete.
    """
    check_arch(arch)
    target = pathlib.Path(out).expanduser().absolute()
    models.check_checkpoint_target(target, arch, force=force)
    paths.check_writable(target.parent, "--out")
    with _lock.exclusive(target):
        models.check_checkpoint_target(target, arch, force=force)
        state_dict = _load_state_dict(weights)
        variables = models.from_torchvision(arch, state_dict)
        spec = models.spec(arch)
        meta = {
            "arch": arch,
            "num_classes": spec.num_classes,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "source": str(pathlib.Path(weights).absolute()),
            "source_sha256": _digest.file_sha256(weights) if pathlib.Path(weights).is_file() else None,
        }
        models.save_checkpoint(target, arch, variables, meta)
    click.echo(f"wrote {out}")
