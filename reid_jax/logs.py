"""Logging shared by the command-line jobs (training, evaluation, experiments)."""

from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import app, flags, logging

from reid_jax.config_base import ConfigError


class QuietLibraries(pylogging.Filter):
    """Drops INFO chatter of orbax / tensorstore / TFDS / grain so progress lines stay readable."""

    NOISY = ("/orbax/", "/tensorstore/", "/tensorflow_datasets/", "/grain/")

    def filter(self, record: pylogging.LogRecord) -> bool:
        if record.levelno >= pylogging.WARNING:
            return True
        return not any(part in record.pathname for part in self.NOISY)


def quiet_libraries() -> None:
    """Install ``QuietLibraries`` on absl's handler (once)."""
    handler = logging.get_absl_handler()
    if not any(isinstance(f, QuietLibraries) for f in handler.filters):
        handler.addFilter(QuietLibraries())


def fail(message: str, code: int) -> None:
    """Print ``error: message`` as one line and leave at once with ``code``.

    ``os._exit`` skips the interpreter's teardown, where orbax's / grain's background threads
    would otherwise print their own tracebacks ("Event loop is closed", ...) after the message.
    Everything the run saved is already closed by then (the training loop and the evaluation job
    close their checkpoint managers and writers on the way out)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (``app.run(main, flags_parser=logs.parse_flags)``), except that a
    ``ConfigError`` raised while a ``--config`` file is read (an unknown or bad config argument,
    ``reid_jax.config_args``) is one ``error:`` line and exit 2, not a traceback in a flag error."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        cause, seen = e.__context__, None
        while cause is not None:  # the innermost ConfigError: its own message, no traceback
            if isinstance(cause, ConfigError):
                seen = cause
            cause = cause.__context__
        if seen is None:
            return app.parse_flags_with_usage(argv)  # absl's own message and exit
        fail(str(seen), 2)
        raise  # not reached: fail exits
