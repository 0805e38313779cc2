"""Metric output: TensorBoard scalars and console lines, from process 0 only."""

from __future__ import annotations

import time
from pathlib import Path

import jax
from absl import logging


class MetricWriter:
    """Writes scalars to ``WORKDIR/tensorboard`` and a compact progress line to the log.

    ``suffix`` ends the event file's name: the file is named by the second it was opened and the
    host, so another job writing to the same directory (the evaluation job beside the training)
    needs its own suffix not to open the same file."""

    def __init__(self, workdir: str | Path, total_steps: int, suffix: str = ""):
        self.total_steps = total_steps
        self.enabled = jax.process_index() == 0
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"), filename_suffix=suffix)
        self._t0 = time.perf_counter()
        self._last = (self._t0, 0)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        for k, v in values.items():
            self._tb.add_scalar(f"{prefix}{k}", float(v), step)
        self._tb.flush()

    def progress(self, step: int, values: dict[str, float], epoch: float) -> dict[str, float]:
        """Logs loss/accuracy with steps/s and ETA since the previous call; returns the rates."""
        now = time.perf_counter()
        t_prev, s_prev = self._last
        rate = (step - s_prev) / max(now - t_prev, 1e-9)
        self._last = (now, step)
        eta = (self.total_steps - step) / max(rate, 1e-9)
        rates = {"steps_per_sec": rate}
        if self.enabled:
            shown = " ".join(f"{k}={float(v):.4f}" for k, v in sorted(values.items()))
            logging.info(
                "step %d/%d epoch %.1f | %s | %.2f steps/s, ETA %s",
                step, self.total_steps, epoch, shown, rate, _hms(eta),
            )
            self.scalars(step, {**values, **rates}, prefix="train/")
        return rates

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
