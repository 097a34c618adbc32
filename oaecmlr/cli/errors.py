"""The CLI's own known error: `main()` prints its message as one line and exits 1."""


class CliError(ValueError):
    """A problem with the command line or a missing optional extra; the message says how to fix it."""
