"""Checkpoint preservation: last N, best by mAP, and every evaluation step when asked."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from reid_jax.train import checkpoints
from reid_jax.train.state import TrainState


def _cfg(**kw):
    cfg = dict(keep_last=1, keep_best=True, keep_eval_steps=False, async_save=False)
    cfg.update(kw)
    return ConfigDict(cfg)


def _state(v: float) -> TrainState:
    return TrainState(
        step=jnp.asarray(int(v), jnp.int32),
        params={"w": jnp.full((3,), v)},
        batch_stats={},
        opt_state=(),
    )


def _run(tmp_path, cfg, eval_steps):
    manager = checkpoints.make_manager(tmp_path, cfg, eval_steps)
    maps = {2: 0.5, 4: 0.3, 6: 0.4}
    for step in range(1, 8):
        metrics = {"mAP": maps[step]} if step in maps else None
        checkpoints.save(manager, step, _state(step), None, metrics)
    manager.wait_until_finished()
    return manager


def test_keeps_latest_and_best(tmp_path):
    manager = _run(tmp_path, _cfg(), [2, 4, 6])
    assert sorted(manager.all_steps()) == [2, 7]  # 2 has the best mAP, 7 is the latest
    state, step = checkpoints.restore(manager, _state(0), None, step=2)
    assert step == 2
    np.testing.assert_array_equal(np.asarray(state.params["w"]), [2.0, 2.0, 2.0])


def test_keeps_every_evaluation_step_when_asked(tmp_path):
    manager = _run(tmp_path, _cfg(keep_best=False, keep_eval_steps=True), [2, 4, 6])
    assert sorted(manager.all_steps()) == [2, 4, 6, 7]


def test_restore_into_another_model_names_the_checkpoint(tmp_path):
    import pytest

    manager = _run(tmp_path, _cfg(), [2])
    other = TrainState(
        step=jnp.zeros((), jnp.int32), params={"w": jnp.zeros((5,))}, batch_stats={}, opt_state=()
    )
    with pytest.raises(ValueError, match=r"checkpoints/7 does not match") as info:
        checkpoints.restore(manager, other, None)
    # Read from the metadata, no array restored: the saved w has 3 entries, this model's 5.
    assert "1 array(s) differ, first params.w is (3,) there, (5,) here" in str(info.value)
    assert sorted(manager.all_steps()) == [2, 7]  # nothing set aside as damaged


def test_restore_of_an_unsaved_step_lists_the_saved_ones(tmp_path):
    import pytest

    manager = _run(tmp_path, _cfg(), [2, 4, 6])
    with pytest.raises(
        FileNotFoundError, match=r"no checkpoint at step 5 in .*saved steps: \[2, 7\]"
    ):
        checkpoints.restore(manager, _state(0), None, step=5)
