"""The ``jaxlogit`` command line. It only parses arguments and calls library functions.

Errors caused by input (``JaxlogitError``) and filesystem faults (disk full, read-only, not a
folder) print one line, ``error: ...``, and exit with 2. Ctrl-C prints one line and exits with
130 (``jaxlogit._interrupt``).
"""

from __future__ import annotations

import sys

import click

from jaxlogit import _interrupt, paths
from jaxlogit.cli import _attack, _backbone, _bench, _correct, _explain, _info
from jaxlogit.cli._app import cli
from jaxlogit.errors import JaxlogitError

# Importing a command module registers its commands on ``cli``.
COMMAND_MODULES = (_attack, _backbone, _bench, _correct, _explain, _info)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``jaxlogit`` script."""
    previous = _interrupt.install()
    try:
        cli.main(args=argv, standalone_mode=False)
    except JaxlogitError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(2)
    except (click.exceptions.Abort, KeyboardInterrupt):  # a prompt aborted, or SIGINT off the main thread
        click.echo(_interrupt.MESSAGE, err=True)
        sys.exit(130)
    except click.ClickException as err:
        click.echo(f"error: {err.format_message()} (see --help)", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except Exception as err:  # a disk fault, however a library wrapped it, is one line; anything else a bug
        fault = paths.filesystem_fault(err)
        if fault is None:
            raise
        click.echo(f"error: {fault}", err=True)
        sys.exit(2)
    finally:
        _interrupt.restore(previous)


__all__ = ["cli", "main"]
