"""A trained run, loaded for inference: its config, model and one checkpoint's weights, and the
functions that embed clips, tracklets and single images with them.

One code path with the evaluation: the model and abstract state are rebuilt by
``reid_jax.run``, tracklets go through the test pipeline (``pipeline.eval_iterator``: the
configured test sampling, every frame resized to config.data.height x width, chunks of T frames)
and ``extract.extract_features`` with the evaluator's jitted embed (flip TTA when the run's config
asks for it), so a tracklet gets the feature the evaluation gives it. Clips and images arrive
decoded: they get the same resize (``transforms.test_transforms``) and the same embed and
averaging. Batches have the config's ``data.test_batch_size`` clips: one compilation per clip
shape, on every local device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orbax.checkpoint as ocp

from reid_jax import run as run_lib
from reid_jax.data import pipeline, sampling, transforms
from reid_jax.data.tracklets import TrackletIndex
from reid_jax.evaluation.evaluators import RetrievalEvaluator
from reid_jax.evaluation.extract import extract_features
from reid_jax.inference import folders
from reid_jax.jobs.evaluation import retrieval_config


def _num_classes(manager: ocp.CheckpointManager, step: int) -> int:
    """The classifier's width in the checkpoint (the number of training identities), read from
    its metadata, so the model is rebuilt without the training data."""
    path = Path(manager.directory) / str(step) / "state"
    tree = ocp.StandardCheckpointer().metadata(path).item_metadata
    try:
        return int(tree["params"]["classifier"]["kernel"].shape[-1])
    except (KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {path} has no params/classifier/kernel: no ReID run") from e


def choose_step(manager: ocp.CheckpointManager, which: str | int) -> int:
    """The saved step for ``which``: "latest", "best" (highest evaluation mAP stored with the
    checkpoint) or a step number. ValueError naming the saved steps otherwise."""
    saved = run_lib.saved_steps(manager)
    if not saved:
        raise FileNotFoundError(f"no finalised checkpoint in {manager.directory}")
    if which == "latest":
        return saved[-1]
    if which == "best":
        scored = {s: (manager.metrics(s) or {}).get("mAP") for s in saved}
        scored = {s: m for s, m in scored.items() if m is not None}
        if not scored:
            raise ValueError(
                f"step=best: no checkpoint in {manager.directory} was saved with an evaluation "
                f"mAP (saved steps: {saved}); use step=latest or a step number"
            )
        return max(scored, key=lambda s: (scored[s], s))
    try:
        step = int(which)
    except ValueError as e:
        raise ValueError(f"step={which!r}: expected 'latest', 'best' or a step number") from e
    if step not in saved:
        raise ValueError(f"step {step} is not saved in {manager.directory}; saved steps: {saved}")
    return step


def run_config(workdir: str | Path) -> Any:
    """The run's resolved config (``WORKDIR/config.json``, written by the training)."""
    return run_lib.load_config(Path(workdir))


@dataclasses.dataclass
class Embedder:
    """A checkpoint ready to embed; build it with ``load``."""

    config: Any
    workdir: Path
    step: int
    model: Any
    state: Any
    evaluator: RetrievalEvaluator

    @property
    def seq_len(self) -> int:
        """T of the evaluation's chunks (config.data.seq_len)."""
        return int(self.config.data.seq_len)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) every frame is resized to before the model sees it."""
        return int(self.config.data.height), int(self.config.data.width)

    @property
    def batch_size(self) -> int:
        """Clips per device batch (config.data.test_batch_size, all devices together)."""
        return int(self.config.data.test_batch_size)

    def embed_tracklets(self, source: Any, index: TrackletIndex) -> np.ndarray:
        """Features [N, D] of the tracklets of ``index`` (records ``start .. start + length`` of
        ``source``, each a dict with ``jpeg`` bytes and a ``name``): exactly the evaluation's
        extraction (pipeline, sampling, chunks of T, mean over chunks, bad-frame handling)."""
        ev = self.evaluator
        ev.source, ev.index = source, index  # the evaluator reads what it embeds from these
        return ev.features(self.state)

    def embed_frames(self, tracklets: Sequence[np.ndarray]) -> np.ndarray:
        """Features [N, D] of N decoded tracklets (uint8 [L_i, H, W, 3], any L_i and size),
        chunked and averaged as ``embed_tracklets`` does (the evaluation's chunk table)."""
        frames = [_check_frames(t, f"tracklet {i}") for i, t in enumerate(tracklets)]
        if not frames:
            raise ValueError("nothing to embed: no tracklets given")
        index = folders.unlabelled_index(np.asarray([len(f) for f in frames], np.int64))
        d = self.config.data
        chunks = pipeline.eval_chunks(index, d.seq_len, d.test_sampling, self.batch_size)
        return self._embed_chunks(lambda t, offsets: frames[t][offsets], chunks, len(frames))

    def embed_clips(self, clips: np.ndarray) -> np.ndarray:
        """Features [N, D] of N clips uint8 [N, T, H, W, 3], each embedded as one chunk."""
        clips = np.asarray(clips)
        if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 clips [N, T, H, W, 3], got {clips.dtype} {list(clips.shape)}"
            )
        n, t = clips.shape[:2]
        chunks = np.concatenate([np.arange(n)[:, None], np.tile(np.arange(t), (n, 1))], axis=1)
        pad = -n % self.batch_size
        if pad:
            chunks = np.concatenate([chunks, np.full((pad, 1 + t), -1)])
        return self._embed_chunks(lambda i, offsets: clips[i][offsets], chunks, n)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """Features [N, D] of N single images uint8 [N, H, W, 3] (clips of T = 1, for trackers)."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"expected images [N, H, W, 3], got shape {list(images.shape)}")
        return self.embed_clips(images[:, None])

    def _embed_chunks(self, frames_of: Any, chunks: np.ndarray, num: int) -> np.ndarray:
        """Runs a chunk table (``pipeline.eval_chunks`` layout) through the evaluator's embed."""
        if num == 0:
            raise ValueError("nothing to embed: no clips / tracklets given")
        h, w = self.size
        resize = transforms.compose(transforms.test_transforms(h, w))
        process = self.evaluator.process
        local = process.local_batch(self.batch_size)

        def batches() -> Iterator[dict[str, np.ndarray]]:
            for b in range(len(chunks) // self.batch_size):
                rows = [process.global_item(b * local + j, self.batch_size) for j in range(local)]
                clips, ids, mask = [], [], []
                for row in chunks[rows]:
                    t, offsets = int(row[0]), row[1:]
                    if t < 0:
                        clips.append(np.zeros((len(offsets), h, w, 3), np.uint8))
                    else:
                        clips.append(resize(frames_of(t, offsets), None))
                    ids.append(max(t, 0))
                    mask.append(float(t >= 0))
                yield {"clip": np.stack(clips), "tracklet": np.asarray(ids, np.int32),
                       "mask": np.asarray(mask, np.float32)}  # fmt: skip

        num_batches = len(chunks) // self.batch_size
        ev = self.evaluator
        return extract_features(ev._embed, self.state, batches(), num_batches, num, ev.mesh)


def _check_frames(frames: np.ndarray, what: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(
            f"{what}: expected uint8 frames [L >= 1, H, W, 3], got {frames.dtype} "
            f"{list(frames.shape)}"
        )
    return frames


def load(
    workdir: str | Path, step: str | int = "latest", config: Any = None,
    batch_size: int | None = None,
) -> Embedder:  # fmt: skip
    """The run in ``workdir`` at checkpoint ``step`` ("latest", "best" or a number), with its
    ``config.json`` unless ``config`` is given; ``batch_size`` overrides data.test_batch_size.
    Needs neither the training data nor a device of the training's kind."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise FileNotFoundError(f"run directory {workdir} does not exist")
    config = run_config(workdir) if config is None else config
    if batch_size is not None:
        config = config.copy_and_resolve_references()
        config.data.test_batch_size = int(batch_size)
    d = config.data
    manager = run_lib.open_checkpoints(workdir)
    try:
        chosen = choose_step(manager, step)
        num_classes = _num_classes(manager, chosen)
        # The optimiser's schedule does not change the state's shapes: any step count will do.
        spe = sampling.steps_per_epoch(num_classes, d.p)
        run = run_lib.build(config, workdir, num_classes, spe)
        state = run_lib.restore(manager, run, chosen)
    finally:
        manager.close()
    evaluator = RetrievalEvaluator(
        retrieval_config(config)[1], model=run.model, source=None, index=None, data_cfg=d,
        mesh=run.mesh, process=run.process, workdir=workdir,
    )  # fmt: skip
    return Embedder(config, workdir, chosen, run.model, state, evaluator)
