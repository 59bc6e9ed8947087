"""The ``jaxlogit`` command line. It only parses arguments and calls library functions.

Errors caused by input (``JaxlogitError``) print one line, ``error: ...``, and exit with 2.
"""

from __future__ import annotations

import sys

import click

from jaxlogit.cli._app import cli
from jaxlogit.cli import _attack, _backbone, _bench, _correct, _explain, _info  # noqa: F401  (registers commands)
from jaxlogit.errors import JaxlogitError


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``jaxlogit`` script."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except JaxlogitError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted: rerun the same command to resume where it stopped", err=True)
        sys.exit(130)
    except click.ClickException as err:
        click.echo(f"error: {err.format_message()} (see --help)", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)


__all__ = ["cli", "main"]
