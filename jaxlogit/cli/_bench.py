"""``jaxlogit bench``: time the attacks against torchattacks on the same weights."""

from __future__ import annotations

import click

from jaxlogit import attacks, bench, paths
from jaxlogit.cli._app import AttackName, check_arch, cli, common_options


@cli.command("bench")
@click.option(
    "--attack",
    "attack_name",
    default="all",
    show_default=True,
    type=AttackName("all"),
    help="A registered attack to time, or all of them.",
)
@click.option(
    "--arch",
    default="resnet_compact",
    show_default=True,
    help="Backbone (compact, or resnet50 etc. at 224x224 with random weights).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=None,
    help="Images per call [default: 256 compact, 8 ImageNet].",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Steady-state calls per measurement (the best counts).",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Trained checkpoint folder [default: newest cached one, else random weights].",
)
@click.option(
    "--torch-deepfool-images",
    type=click.IntRange(min=0),
    default=None,
    help="Images torchattacks' slow DeepFool is timed on [default: 4 compact, 0 (skip) ImageNet].",
)
@click.option("--no-torch", is_flag=True, help="Skip torchattacks even if installed.")
@click.option(
    "--weights-as-constants",
    is_flag=True,
    help="Bake the weights into jaxlogit's compiled attacks as constants (a closure "
    "as logits_fn) instead of passing them as program inputs.",
)
@click.option(
    "--precision",
    type=click.Choice(bench.PRECISIONS),
    default="float32",
    show_default=True,
    help="jaxlogit's backbone compute dtype (torchattacks stays float32).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the results as JSON to this file.",
)
@common_options
def bench_command(
    attack_name,
    arch,
    batch,
    repeats,
    checkpoint,
    torch_deepfool_images,
    no_torch,
    weights_as_constants,
    precision,
    seed,
    json_path,
    data_dir,
    cache_dir,
) -> None:
    """Compile time, steady state, images/s, time per gradient step and GFLOP/s of the attacks,
    with torchattacks' speed on the same weights and batch measured in the same run."""
    check_arch(arch)
    config = bench.BenchConfig(
        arch=arch,
        attacks=attacks.names() if attack_name == "all" else (attack_name,),
        batch=batch,
        repeats=repeats,
        seed=seed,
        checkpoint=checkpoint,
        cache=cache_dir,
        data_dir=data_dir,
        torch=not no_torch,
        torch_deepfool_images=torch_deepfool_images,
        weights_as_constants=weights_as_constants,
        precision=precision,
    )
    report = bench.run(config, log=lambda message: click.echo(f"... {message}", err=True))
    click.echo(bench.markdown(report))
    if json_path:
        paths.write_json_atomic(json_path, bench.as_json(report))
        click.echo(f"wrote {json_path}", err=True)
