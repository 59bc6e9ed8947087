"""``jaxlogit info``, ``jaxlogit models`` and ``jaxlogit convert``."""

from __future__ import annotations

import importlib.metadata
import pathlib

import click

from jaxlogit import _lock, data, models, paths
from jaxlogit.cli._app import check_arch, cli, common_options
from jaxlogit.errors import JaxlogitError

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets", "numpy", "torch", "torchvision", "torchattacks")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cached_artifacts(root: pathlib.Path) -> dict[str, list[str]]:
    found = {}
    for kind in ("backbones", "logits", "correctors", "converted"):
        folder = root / kind
        found[kind] = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return found


@cli.command()
@common_options
def info(data_dir, cache_dir) -> None:
    """Show devices, package versions, and which datasets and checkpoints were found."""
    import jax

    click.echo("devices: " + ", ".join(f"{d.platform}:{d.id}" for d in jax.devices()))
    click.echo("versions: " + ", ".join(f"{p} {_version(p)}" for p in _PACKAGES))
    fmnist = data.find_fashion_mnist(data_dir)
    click.echo(f"fashion_mnist: {fmnist if fmnist else 'not found (apt-get install -y dataset-fashion-mnist, or --data-dir)'}")
    root = paths.cache_root(cache_dir)
    click.echo(f"cache: {root}")
    for kind, names in _cached_artifacts(root).items():
        click.echo(f"  {kind}: {', '.join(names) if names else '-'}")


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
        raise JaxlogitError(f"cannot read {weights} as a torch state_dict ({type(err).__name__}): pass a torchvision .pth file") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise JaxlogitError(f"{weights} holds a {type(state).__name__}, not a state_dict: save model.state_dict()")
    return state


@cli.command()
@click.option("--arch", required=True, help="vgg16, vgg16_bn, resnet50 or densenet121.")
@click.option("--weights", required=True, type=click.Path(), help="A torchvision state_dict (.pth).")
@click.option("--out", required=True, type=click.Path(),
              help="Folder for the orbax checkpoint: new or empty (nothing else is ever overwritten).")
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
        meta = {"arch": arch, "num_classes": spec.num_classes, "mean": list(spec.mean), "std": list(spec.std),
                "source": str(pathlib.Path(weights).absolute())}
        models.save_checkpoint(target, arch, variables, meta)
    click.echo(f"wrote {out}")
