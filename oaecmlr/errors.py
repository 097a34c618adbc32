"""The project's known errors: each message is one line that says what is wrong and how to fix it.

`oaecmlr.cli.app.main` prints any `OaecmlrError` as that one line and exits 1; anything else is a
bug and keeps its traceback (in a run's log.txt when it happens during training). The stops of a
run (`StopRequested`, `StopNow`, `EndedBySignal`) are control flow of the engine, not errors of the user.
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


class StopRequested(Exception):
    """Raised inside the loop after a graceful stop was requested (SIGTERM, Ctrl-C, `oaecmlr stop`)."""


class StopNow(BaseException):
    """A second SIGTERM or Ctrl-C: stop at once, wherever the run is, keeping the last checkpoint.
    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way swallows it."""


class EndedBySignal(BaseException):
    """A signal whose default action would end the process without a word: end the run with a
    failure event instead. A BaseException, as StopNow."""
