"""Logging shared by the command-line jobs (training, evaluation, experiments)."""

from __future__ import annotations

import logging as pylogging
import os
import sys

from absl import logging


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
