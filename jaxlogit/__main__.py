"""``python -m jaxlogit`` = the ``jaxlogit`` command."""

from jaxlogit.cli import main

main()
