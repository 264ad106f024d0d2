"""User-facing errors: one line, no traceback, exit code 2 from the CLI."""


class LensauditError(Exception):
    """Bad input or an unavailable resource, explained in one line."""

    exit_code = 2
