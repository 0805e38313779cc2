"""Logging shared by the command-line jobs (training, evaluation, experiments)."""

from __future__ import annotations

import logging as pylogging

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
