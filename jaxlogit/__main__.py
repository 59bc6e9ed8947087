"""``python -m jaxlogit`` = the ``jaxlogit`` command."""


def run() -> None:
    """Entry point: Ctrl-C handling first (before jax is imported), then the CLI, then an exit
    that skips the interpreter's teardown (see ``_interrupt.finish``)."""
    from jaxlogit import _interrupt

    _interrupt.install()
    from jaxlogit.cli import main

    try:
        main()
    except SystemExit as exit_:
        _interrupt.finish(exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1)
    _interrupt.finish(0)


if __name__ == "__main__":
    run()
