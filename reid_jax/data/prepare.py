"""Makes the configured dataset ready: generate SynthMARS if needed, then build the TFDS dataset.

Real datasets are never downloaded: ``raw_dir`` must hold the manual download (see the README and
docs/datasets.md). SynthMARS is the embedded default: when its raw tree is missing it is rendered
first. On several hosts only process 0 prepares; the others wait at a barrier and then read the
result. ``config.data.split`` (the trial of iLIDS-VID / PRID-2011; 0 elsewhere) is checked here,
so a bad value fails before any model is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
from absl import logging
from jax.experimental import multihost_utils

from reid_jax.data import builders


def ensure_prepared(data_cfg: Any) -> None:
    """Generates (SynthMARS only) and prepares ``data_cfg.name`` under ``data_cfg.data_dir``,
    then checks that ``data_cfg.split`` names one of its trials."""
    if data_cfg.name not in builders.DATASETS:
        raise ValueError(
            f"config.data.name={data_cfg.name!r}: expected one of {sorted(builders.DATASETS)}"
        )
    if jax.process_index() == 0:
        raw_dir = Path(data_cfg.raw_dir)
        if data_cfg.name == "synth_mars":
            from reid_jax.data import synth_mars

            s = data_cfg.synth
            logging.info("SynthMARS: ensuring %s (generated once, then reused)", raw_dir)
            synth_mars.generate(
                raw_dir,
                num_ids=s.num_ids,
                height=s.height,
                width=s.width,
                corruption_rate=s.corruption_rate,
                seed=s.seed,
                length_scale=s.length_scale,
            )
        elif not raw_dir.exists():
            raise FileNotFoundError(
                f"config.data.raw_dir={str(raw_dir)!r} does not exist: download {data_cfg.name} "
                "by hand and lay it out as docs/datasets.md says:\n"
                + builders.DATASETS[data_cfg.name].MANUAL_DOWNLOAD_INSTRUCTIONS
            )
        builders.prepare(data_cfg.name, data_cfg.data_dir, raw_dir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("reid_jax.data.prepared")
    trials = builders.num_trials(data_cfg.name, data_cfg.data_dir)
    split = data_cfg.split
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < trials:
        raise ValueError(
            f"config.data.split={split!r}: {data_cfg.name} has {trials} train/test trial(s), "
            f"expected an integer in 0..{trials - 1}"
        )
