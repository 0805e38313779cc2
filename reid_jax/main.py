"""Entry point: ``python -m reid_jax.main --config configs/<x>.py --workdir DIR [--config.k=v]``.

Trains and periodically evaluates; rerunning the same command resumes from the workdir.
"""

from __future__ import annotations

import logging as pylogging

from absl import app, flags, logging
from ml_collections import config_flags

from reid_jax import distributed
from reid_jax.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and results go.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(pylogging.Filter):
    """Drops INFO chatter of orbax / tensorstore / TFDS so progress lines stay readable."""

    NOISY = ("/orbax/", "/tensorstore/", "/tensorflow_datasets/", "/grain/")

    def filter(self, record: pylogging.LogRecord) -> bool:
        if record.levelno >= pylogging.WARNING:
            return True
        return not any(part in record.pathname for part in self.NOISY)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    distributed.initialize()
    logging.info("config:\n%s", _CONFIG.value)
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
