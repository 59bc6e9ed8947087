"""``python -m jaxlogit`` = the ``jaxlogit`` command."""


def run() -> None:
    """Entry point: Ctrl-C handling first (before jax is imported), then the CLI."""
    from jaxlogit import _interrupt

    _interrupt.install()
    from jaxlogit.cli import main

    main()


if __name__ == "__main__":
    run()
