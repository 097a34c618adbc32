"""The project's known errors: each message is one line that says what is wrong and how to fix it.

`oaecmlr.cli.app.main` prints any `OaecmlrError` as that one line and exits 1; anything else is a
bug and keeps its traceback (in a run's log.txt when it happens during training).
"""


class OaecmlrError(Exception):
    """Base of every known error."""


class ConfigError(OaecmlrError, ValueError):
    """A bad preset, config file, option or `--set` value."""


class DatasetError(OaecmlrError, ValueError):
    """A known data problem: a missing folder, a bad manifest line, an unreadable image."""


class CheckpointError(OaecmlrError, ValueError):
    """A checkpoint that cannot be loaded or does not fit the run."""


class RunError(OaecmlrError, ValueError):
    """A bad run name, a missing run, or a run that already exists or cannot do what was asked."""


class RunFailed(OaecmlrError):
    """The run ended with a failure event; str() is the one-line reason."""


class CliError(OaecmlrError, ValueError):
    """A problem with the command line or a missing optional extra."""
