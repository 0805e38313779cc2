"""The inference API against the evaluation: the same features for the same tracklets."""

from __future__ import annotations

import numpy as np
import pytest

from reid_jax import run as run_lib
from reid_jax.data import transforms
from reid_jax.inference import model

from .conftest import longest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _frames(source, index, t: int) -> np.ndarray:
    start, length = int(index.start[t]), int(index.length[t])
    return np.stack([transforms.decode_jpeg(source[start + i]["jpeg"]) for i in range(length)])


def test_tracklets_frames_clips_and_images_give_the_evaluation_features(evaluated, embedder):
    cfg, _, source, index, want = evaluated
    assert embedder.step == 3 and embedder.size == (cfg.data.height, cfg.data.width)
    got = embedder.embed_tracklets(source, index)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # Decoded tracklets of any length (4 .. 16 frames here): chunked and averaged alike.
    picks = longest(index, 2) + [int(np.argmin(index.length))]
    frames = [_frames(source, index, t) for t in picks]
    assert max(len(f) for f in frames) > 2 * cfg.data.seq_len  # several chunks
    np.testing.assert_allclose(embedder.embed_frames(frames), want[picks], atol=1e-5, rtol=0)
    # A tracklet of exactly T frames is one chunk: as a clip it has the same feature.
    t = int(np.flatnonzero(index.length == cfg.data.seq_len)[0])
    clip = _frames(source, index, t)[None]
    np.testing.assert_allclose(embedder.embed_clips(clip), want[[t]], atol=1e-5, rtol=0)
    # Larger frames are resized to the configured size first, as the evaluation does.
    big = transforms.resize(clip[0], 2 * cfg.data.height, 2 * cfg.data.width)[None]
    resized = transforms.resize(big[0], cfg.data.height, cfg.data.width)[None]
    np.testing.assert_allclose(embedder.embed_clips(big), embedder.embed_clips(resized), atol=1e-6)
    # Single images are clips of T = 1; a batch larger than the device batch is split.
    images = np.concatenate([f for f in frames])[: embedder.batch_size + 3]
    feats = embedder.embed_images(images)
    assert feats.shape == (len(images), want.shape[1])
    np.testing.assert_allclose(feats[-1:], embedder.embed_clips(images[-1:, None]), atol=1e-5)
    # One compilation per clip shape: calling again with seen shapes compiles nothing.
    compiled = embedder.evaluator._embed._cache_size()
    embedder.embed_images(images[:2])
    embedder.embed_frames(frames[:1])
    assert embedder.evaluator._embed._cache_size() == compiled


def test_checkpoint_choice_and_bad_inputs(trained, tmp_path):
    cfg, workdir, _ = trained
    manager = run_lib.open_checkpoints(workdir)
    try:
        assert model.choose_step(manager, "latest") == 3
        assert model.choose_step(manager, "2") == 2
        with pytest.raises(ValueError, match=r"step 7 is not saved .*saved steps: \[1, 2, 3\]"):
            model.choose_step(manager, 7)
        with pytest.raises(ValueError, match="no checkpoint .* was saved with an evaluation mAP"):
            model.choose_step(manager, "best")
        with pytest.raises(ValueError, match="expected 'latest', 'best' or a step number"):
            model.choose_step(manager, "newest")
    finally:
        manager.close()
    with pytest.raises(FileNotFoundError, match=f"run directory {tmp_path}/nope does not exist"):
        model.load(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        model.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoints directory"):
        model.load(tmp_path, config=cfg)
    with pytest.raises(ValueError, match=r"expected uint8 clips \[N, T, H, W, 3\]"):
        model.Embedder.embed_clips(None, np.zeros((2, 4, 8, 8), np.uint8))


class _Saved:
    """A checkpoint manager's listing: steps with their saved metrics (None: none saved)."""

    directory = "ckpt"

    def __init__(self, metrics):
        self._metrics = metrics

    def reload(self):
        pass

    def all_steps(self):
        return list(self._metrics)

    def metrics(self, step):
        return self._metrics[step]


def test_best_is_the_highest_saved_map():
    saved = _Saved({100: {"mAP": 0.4}, 200: {"mAP": 0.6}, 300: None, 400: {"mAP": 0.5}})
    assert model.choose_step(saved, "best") == 200 and model.choose_step(saved, "latest") == 400
    with pytest.raises(FileNotFoundError, match="no finalised checkpoint in ckpt"):
        model.choose_step(_Saved({}), "latest")
    with pytest.raises(ValueError, match="nothing to embed: no tracklets given"):
        model.Embedder.embed_frames(None, [])
    with pytest.raises(ValueError, match=r"tracklet 1: expected uint8 frames \[L >= 1"):
        model.Embedder.embed_frames(
            None, [np.zeros((2, 8, 4, 3), np.uint8), np.zeros((0, 8, 4, 3), np.uint8)]
        )


def test_an_earlier_step_is_another_model(trained, embedder):
    earlier = model.load(trained[1], step=1, batch_size=8)
    assert earlier.step == 1 and earlier.batch_size == 8
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 20, 3), dtype=np.uint8)
    assert not np.allclose(earlier.embed_images(images), embedder.embed_images(images))
