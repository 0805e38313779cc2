"""Fixtures of the inference tests: the shared tiny trained run (tests/conftest.py), loaded once,
its test split and the evaluation's features of it, and footage folders made from its frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reid_jax import run as run_lib
from reid_jax.evaluation.evaluators import RetrievalEvaluator
from reid_jax.jobs.evaluation import retrieval_config


@pytest.fixture(scope="session")
def evaluated(trained):
    """(config, workdir, test source, test index, the evaluation's step-3 features)."""
    cfg, workdir, _ = trained
    run = run_lib.setup(cfg, workdir)
    manager = run_lib.open_checkpoints(workdir)
    state = run_lib.restore(manager, run, 3)
    manager.close()
    ev = RetrievalEvaluator(
        retrieval_config(cfg)[1], model=run.model, source=run.test_source, index=run.test_index,
        data_cfg=cfg.data, mesh=run.mesh, process=run.process,
    )  # fmt: skip
    return cfg, workdir, run.test_source, run.test_index, ev.features(state)


@pytest.fixture(scope="session")
def embedder(trained):
    from reid_jax.inference import model

    return model.load(trained[1])


def write_footage(source, index, tracklets, root: Path) -> Path:
    """Tracklet k of the split as folder ``root/person_<k>`` with frames ``f1.jpg .. fN.jpg``
    (natural order differs from plain string order beyond 9 frames)."""
    for t in tracklets:
        folder = root / f"person_{t}"
        folder.mkdir(parents=True)
        for i in range(int(index.length[t])):
            data = source[int(index.start[t] + i)]["jpeg"]
            (folder / f"f{i + 1}.jpg").write_bytes(data)
    return root


def longest(index, n: int) -> list[int]:
    """The n longest tracklets (more than 9 frames: natural sorting matters)."""
    return [int(t) for t in np.argsort(-index.length, kind="stable")[:n]]
