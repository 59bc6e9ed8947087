"""User-facing errors: one line that names the problem and the fix."""


class JaxlogitError(Exception):
    """An error caused by the user's input or environment, not by a bug.

    The CLI prints ``error: <message>`` (one line, no traceback) and exits with 2.
    The message must say what is wrong *and* how to fix it.
    """
