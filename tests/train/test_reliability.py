"""Nothing lost, nothing silent: divergence, damaged checkpoints, process-count changes, config
ranges and frames of odd sizes (docs/scaling.md, "What is guaranteed")."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import grain
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from ml_collections import ConfigDict
from PIL import Image

from reid_jax import config_base
from reid_jax.config_base import ConfigError, load_config_file
from reid_jax.data import pipeline, transforms
from reid_jax.data.builders import TrackletIndex
from reid_jax.jobs.training import NonFiniteError, train_and_evaluate
from reid_jax.train import checkpoints
from reid_jax.train.state import TrainState

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ config ranges
@pytest.mark.parametrize(
    "key,value,expected",
    [("data.seq_len", 0, ">= 1"), ("checkpoint.every_steps", 0, ">= 1"),
     ("log_every_steps", 0, ">= 1"), ("data.test_batch_size", 0, ">= 1"),
     ("num_steps", 0, "> 0"), ("num_epochs", 0, "gives no training step"),
     ("data.erase_p", 1.5, "probability"), ("optim.lr", 0.0, "> 0"), ("data.k", -2, ">= 1")],
)  # fmt: skip
def test_out_of_range_values_are_named(key, value, expected):
    cfg = load_config_file(ROOT / "configs" / "synth_mars_demo.py")
    config_base.check_ranges(cfg)  # the demo itself is fine
    node = cfg
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError, match=rf"config\.{key}={value!r}.*{expected}"):
        config_base.check_ranges(cfg)


def test_cli_names_a_bad_value_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "reid_jax.main", "--config", "configs/synth_mars_demo.py:tiny",
         "--workdir", str(tmp_path / "run"), "--config.data.seq_len=0",
         f"--config.data.data_dir={tmp_path / 'tfds'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "error: config.data.seq_len=0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "tfds").exists()


# ------------------------------------------------------------------ checkpoints
def _state(v: float) -> TrainState:
    return TrainState(step=jnp.asarray(int(v), jnp.int32), params={"w": jnp.full((3,), v)},
                      batch_stats={}, opt_state=())  # fmt: skip


def _iterator():
    return iter(grain.MapDataset.range(100).to_iter_dataset())


def _saved(tmp_path, steps=(1, 2, 3)):
    cfg = ConfigDict(dict(keep_last=5, keep_best=False, keep_eval_steps=False, async_save=False))
    manager = checkpoints.make_manager(tmp_path, cfg, [])
    it = _iterator()
    for step in steps:
        next(it)
        checkpoints.save(manager, step, _state(step), it)
    manager.wait_until_finished()
    return cfg, manager


@pytest.mark.parametrize("broken", ["state/_METADATA", "data/process_0-of-1.json",
                                    "state/manifest.ocdbt"])  # fmt: skip
def test_damaged_newest_step_falls_back_to_the_intact_one(tmp_path, broken, caplog):
    cfg, manager = _saved(tmp_path)
    (tmp_path / "checkpoints" / "3" / broken).unlink()
    manager = checkpoints.make_manager(tmp_path, cfg, [])  # a rerun
    it = _iterator()
    state, step = checkpoints.restore(manager, _state(0), it)
    assert step == 2 and float(state.params["w"][0]) == 2.0
    assert next(it) == 2  # the iterator resumes after the 2 items consumed before step 2
    assert (tmp_path / "checkpoints" / "3.damaged").is_dir()  # kept for inspection
    assert sorted(manager.all_steps()) == [1, 2]  # step 3 can be saved again
    assert any("step 3 is damaged" in r.getMessage() and broken in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_corrupt_iterator_file_falls_back(tmp_path):
    cfg, manager = _saved(tmp_path)
    (tmp_path / "checkpoints" / "3" / "data" / "process_0-of-1.json").write_text("{not json")
    state, step = checkpoints.restore(checkpoints.make_manager(tmp_path, cfg, []), _state(0),
                                      _iterator())  # fmt: skip
    assert step == 2


def test_all_damaged_is_an_error_that_deletes_nothing(tmp_path):
    cfg, manager = _saved(tmp_path, steps=(1,))
    (tmp_path / "checkpoints" / "1" / "state" / "_METADATA").unlink()
    with pytest.raises(checkpoints.CheckpointError, match=r"no intact checkpoint.*step 1: missing"):
        checkpoints.restore(checkpoints.make_manager(tmp_path, cfg, []), _state(0), _iterator())
    assert (tmp_path / "checkpoints" / "1").is_dir()


def test_another_process_count_is_named(tmp_path):
    cfg, manager = _saved(tmp_path, steps=(1,))
    data = tmp_path / "checkpoints" / "1" / "data"
    (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")
    (data / "process_1-of-2.json").write_text((data / "process_0-of-2.json").read_text())
    with pytest.raises(checkpoints.CheckpointError, match="written by 2 processes.*resume with 2"):
        checkpoints.restore(checkpoints.make_manager(tmp_path, cfg, []), _state(0), _iterator())


# ------------------------------------------------------------------ divergence
def test_divergence_stops_before_saving_non_finite_values(tmp_path):
    cfg = load_config_file(ROOT / "configs" / "synth_mars_demo.py", "tiny")
    cfg.data.raw_dir, cfg.data.data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds")
    cfg.num_steps, cfg.eval_every_epochs = 6, 0.0
    cfg.optim.lr, cfg.optim.schedule = 1e30, "constant"
    cfg.checkpoint.update(every_steps=1, keep_last=2, async_save=False)
    cfg.log_every_steps = 3
    with pytest.raises(NonFiniteError, match=r"diverged at step (\d).*last checkpoint, step") as e:
        train_and_evaluate(cfg, tmp_path / "run")
    bad_step = int(e.value.args[0].split("step ")[1].split(" ")[0])
    manager = checkpoints.make_manager(tmp_path / "run", cfg.checkpoint, [])
    saved = sorted(manager.all_steps())
    assert saved and max(saved) < bad_step  # nothing at or after the divergence
    for step in saved:  # every kept checkpoint holds finite values
        args = ocp.args.Composite(state=ocp.args.StandardRestore())
        restored = manager.restore(step, args=args)["state"]
        leaves = [np.asarray(x) for x in _leaves(restored)]
        assert all(np.isfinite(x).all() for x in leaves if x.dtype.kind == "f")


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


# ------------------------------------------------------------------ frames
def _jpeg(h, w, value):
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_odd_sized_frame_is_resized_on_its_own():
    """A 1x1 first frame no longer shrinks the clip's other frames (each frame is brought to the
    configured size by itself)."""
    h, w = 16, 8
    values = [200, 40, 80, 120]
    sizes = [(1, 1), (h, w), (24, 12), (h, w)]
    records = [{"jpeg": _jpeg(*size, v), "name": f"f{i}".encode()}
               for i, (size, v) in enumerate(zip(sizes, values))]  # fmt: skip
    clip, bad = pipeline._load_frames(records, np.arange(4), 0, 4, h, w)
    assert clip.shape == (4, h, w, 3) and bad == []
    for i, record in enumerate(records):
        alone = transforms.resize(transforms.decode_jpeg(record["jpeg"])[None], h, w)[0]
        np.testing.assert_array_equal(clip[i], alone)
    assert abs(int(clip[1].mean()) - 40) <= 2  # untouched by the odd frame


def test_undecodable_test_frames_are_reported_and_counted(caplog):
    h, w = 16, 8
    records = [{"jpeg": _jpeg(h, w, 10 * i) if i != 1 else b"", "name": f"t0f{i}".encode()}
               for i in range(4)]  # fmt: skip
    one = np.array([1])
    index = TrackletIndex(start=one * 0, length=one * 4, pid=one, camid=one,
                          is_query=one.astype(bool), label=one * 0)  # fmt: skip
    chunks = pipeline.eval_chunks(index, 4, "all", 1)
    resize = transforms.compose(transforms.test_transforms(h, w))
    loader = pipeline.EvalClips(records, index, chunks, resize, h, w)
    item = loader(0)
    assert item["bad_frames"].tolist() == [1, -1, -1, -1]
    counter = pipeline.BadFrames(records, limit=0, what="evaluation")
    with pytest.raises(RuntimeError, match=r"(?s)1 frames failed to decode in evaluation.*t0f1"):
        list(counter.watch(iter([{k: v[None] for k, v in item.items()}])))
    assert any("t0f1" in r.getMessage() for r in caplog.records)
