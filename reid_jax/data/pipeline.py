"""grain input pipelines: P x K training clips and memory-bounded all-frames test clips.

Every element is a pure function of its *global* index, so the pipeline is deterministic, resumes
exactly from grain's iterator state, and shards across processes without coordination:

- training: global item ``g`` belongs to step ``g // global_batch``; its epoch's P x K plan
  (``sampling.pk_epoch``) names the tracklet, and ``np.random.default_rng([seed, g])`` draws the
  frames and the clip's single augmentation. Process ``p`` of ``n`` loads items
  ``[step * global_batch + p * local_batch, ... + local_batch)`` of every step.
- testing: each tracklet is cut into ``ceil(length / T)`` consecutive chunks of T frames
  (``sampling.all_frames_chunks``), so device memory is bounded by the batch size whatever the
  tracklet length; clip features are averaged per tracklet afterwards. The list of chunks is
  padded to whole global batches with masked-out entries.

JPEG decoding runs in grain worker processes (``mp_prefetch``). A frame that does not decode is
replaced by the nearest decodable frame of the same tracklet and reported in the batch's
``bad_frames`` field (record indices, -1 padded) so the training loop can count and warn.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import numpy as np
from absl import logging

from reid_jax.data import sampling, transforms
from reid_jax.data.builders import TrackletIndex, record_name
from reid_jax.parallel import ProcessSlice


def _load_frames(
    source: Any, record_ids: np.ndarray, start: int, length: int, height: int, width: int
) -> tuple:
    """Decodes the given records at ``height`` x ``width``; an undecodable frame is replaced by the
    nearest good one. A frame of another size is resized on its own (bilinear, as the transforms
    do), so one odd frame never changes the size of the others."""
    frames: dict[int, np.ndarray] = {}
    bad: list[int] = []

    def decode(rid: int) -> np.ndarray | None:
        if rid not in frames:
            record = source[int(rid)]
            try:
                img = transforms.decode_jpeg(record["jpeg"], name=f"record {rid}")
                frames[rid] = transforms.resize(img[None], height, width)[0]
            except transforms.DecodeError:
                frames[rid] = None
        return frames[rid]

    out = []
    for rid in record_ids:
        img = decode(int(rid))
        if img is None:
            bad.append(int(rid))
            # Search outwards within the tracklet for a frame that decodes.
            for delta in range(1, length):
                for cand in (rid - delta, rid + delta):
                    if start <= cand < start + length and decode(int(cand)) is not None:
                        img = frames[int(cand)]
                        break
                if img is not None:
                    break
        out.append(img)
    if any(img is None for img in out):  # nothing in the tracklet decodes
        out = [np.zeros((height, width, 3), np.uint8)] * len(out)
    return np.stack(out), bad


@dataclasses.dataclass(eq=False)
class TrainClips:
    """Index -> training clip; picklable so grain workers can run it."""

    source: Any
    index: TrackletIndex
    global_batch: int
    p: int
    k: int
    seq_len: int
    seed: int
    frame_sampler: Callable[..., np.ndarray]
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    process: ProcessSlice
    height: int  # every frame is decoded at this size (config.data.height / width)
    width: int
    epoch: str = "identities"  # config.data.epoch: what one epoch visits (sampling.EPOCHS)

    @functools.cached_property
    def steps_per_epoch(self) -> int:
        return sampling.epoch_steps(self.index.label, self.p, self.k, self.epoch)

    def _plan(self, epoch: int) -> np.ndarray:
        """The epoch's P x K plan, computed once per epoch in each worker."""
        cache = self.__dict__.setdefault("_plans", {})
        if epoch not in cache:
            cache.clear()
            cache[epoch] = sampling.epoch_plan(
                self.index.label, self.p, self.k, self.seed, epoch, self.epoch
            )
        return cache[epoch]

    def __call__(self, local_item: int) -> dict[str, np.ndarray]:
        g = self.process.global_item(int(local_item), self.global_batch)
        step, slot = divmod(g, self.global_batch)
        epoch, row = divmod(step, self.steps_per_epoch)
        t = int(self._plan(epoch)[row, slot])
        rng = np.random.default_rng([self.seed, g])
        start, length = int(self.index.start[t]), int(self.index.length[t])
        frame_ids = start + self.frame_sampler(length, self.seq_len, rng)
        clip, bad = _load_frames(self.source, frame_ids, start, length, self.height, self.width)
        return {
            "clip": self.transform(clip, rng),
            "label": np.int32(self.index.label[t]),
            "tracklet": np.int32(t),
            "bad_frames": _pad_bad(bad, self.seq_len),
        }


def _pad_bad(bad: list[int], size: int) -> np.ndarray:
    out = np.full((size,), -1, np.int64)
    out[: min(size, len(bad))] = bad[:size]
    return out


@dataclasses.dataclass(frozen=True)
class EvalClips:
    """Index -> test chunk (all frames of every tracklet, T at a time); padded entries masked."""

    source: Any
    index: TrackletIndex
    chunks: np.ndarray  # [N, 1 + T]: tracklet id, then T frame offsets; tracklet -1 = padding
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    height: int
    width: int

    def __call__(self, item: int) -> dict[str, np.ndarray]:
        t, offsets = int(self.chunks[item, 0]), self.chunks[item, 1:]
        if t < 0:
            clip = np.zeros((len(offsets), self.height, self.width, 3), np.uint8)
            return {"clip": clip, "tracklet": np.int32(-1), "mask": np.float32(0.0),
                    "bad_frames": _pad_bad([], len(offsets))}  # fmt: skip
        start, length = int(self.index.start[t]), int(self.index.length[t])
        clip, bad = _load_frames(
            self.source, start + offsets, start, length, self.height, self.width
        )
        clip = self.transform(clip, np.random.default_rng(0))
        return {"clip": clip, "tracklet": np.int32(t), "mask": np.float32(1.0),
                "bad_frames": _pad_bad(bad, len(offsets))}  # fmt: skip


TEST_SAMPLING = ("all", "evenly", "restricted_random")


def eval_chunks(
    index: TrackletIndex, seq_len: int, sampling_mode: str, multiple: int, seed: int = 0
) -> np.ndarray:
    """Chunk table for test sampling ``all`` (every frame, in chunks of T), ``evenly`` (T spread
    frames) or ``restricted_random`` (one random frame from each of T equal chunks, drawn from
    ``np.random.default_rng([seed, tracklet])``: the same frames on every run)."""
    rows = []
    for t, length in enumerate(index.length):
        if sampling_mode == "all":
            chunks = sampling.all_frames_chunks(int(length), seq_len)
        elif sampling_mode == "evenly":
            chunks = sampling.evenly_spaced(int(length), seq_len)[None]
        elif sampling_mode == "restricted_random":
            rng = np.random.default_rng([seed, t])
            chunks = sampling.restricted_random(int(length), seq_len, rng)[None]
        else:
            raise ValueError(
                f"config.data.test_sampling={sampling_mode!r}: expected one of {TEST_SAMPLING}"
            )
        rows.append(np.concatenate([np.full((len(chunks), 1), t), chunks], axis=1))
    table = np.concatenate(rows).astype(np.int64)
    pad = -len(table) % multiple
    if pad:
        filler = np.zeros((pad, table.shape[1]), np.int64)
        filler[:, 0] = -1
        table = np.concatenate([table, filler])
    return table


def _ignore_sigterm(worker_index: int, worker_count: int) -> None:
    """Workers ignore SIGTERM: a scheduler signals the whole process group, and the trainer
    must outlive it long enough to save its preemption checkpoint from the workers' batches."""
    del worker_index, worker_count
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _iterate(
    dataset: grain.MapDataset, batch: int, num_workers: int, threads: int
) -> grain.DatasetIterator:
    ds = dataset.batch(batch, drop_remainder=True)
    # grain reads at most prefetch_buffer_size elements at once: fewer than the threads idles them
    ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(2, threads))
    )
    if num_workers > 0:
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2),
            worker_init_fn=_ignore_sigterm,
        )
    return iter(ds)


def frame_sampler(data_cfg: Any) -> Callable[..., np.ndarray]:
    """``config.data.frame_sampler`` as f(length, t, rng), with ``data.sample_stride`` bound
    for the samplers that take a stride."""
    name = data_cfg.frame_sampler
    if name not in sampling.FRAME_SAMPLERS:
        raise ValueError(
            f"config.data.frame_sampler={name!r}: expected one of {sorted(sampling.FRAME_SAMPLERS)}"
        )
    if name in sampling.STRIDED_SAMPLERS:
        return functools.partial(sampling.FRAME_SAMPLERS[name], stride=int(data_cfg.sample_stride))
    return sampling.FRAME_SAMPLERS[name]


def train_iterator(
    source: Any,
    index: TrackletIndex,
    data_cfg: Any,
    *,
    num_steps: int,
    seed: int,
    process: ProcessSlice = ProcessSlice(),
) -> grain.DatasetIterator:
    """Checkpointable iterator over this process's share of ``num_steps`` P x K batches."""
    global_batch = data_cfg.p * data_cfg.k
    loader = TrainClips(
        source=source,
        index=index,
        global_batch=global_batch,
        p=data_cfg.p,
        k=data_cfg.k,
        seq_len=data_cfg.seq_len,
        seed=seed,
        frame_sampler=frame_sampler(data_cfg),
        transform=transforms.compose(
            transforms.train_transforms(
                data_cfg.height,
                data_cfg.width,
                pad=data_cfg.pad,
                flip_p=data_cfg.flip_p,
                erase_p=data_cfg.erase_p,
            )
        ),
        process=process,
        height=data_cfg.height,
        width=data_cfg.width,
        epoch=data_cfg.epoch,
    )
    local = process.local_batch(global_batch)
    ds = grain.MapDataset.range(num_steps * local).map(loader)
    return _iterate(ds, local, data_cfg.num_workers, data_cfg.num_threads)


def eval_iterator(
    source: Any,
    index: TrackletIndex,
    data_cfg: Any,
    *,
    global_batch: int,
    process: ProcessSlice = ProcessSlice(),
) -> tuple[grain.DatasetIterator, int]:
    """Iterator over this process's share of the test chunks, and the number of global batches."""
    chunks = eval_chunks(index, data_cfg.seq_len, data_cfg.test_sampling, global_batch)
    loader = EvalClips(
        source=source,
        index=index,
        chunks=chunks,
        transform=transforms.compose(transforms.test_transforms(data_cfg.height, data_cfg.width)),
        height=data_cfg.height,
        width=data_cfg.width,
    )
    local = process.local_batch(global_batch)
    num_batches = len(chunks) // global_batch
    items = [process.global_item(j, global_batch) for j in range(num_batches * local)]
    ds = grain.MapDataset.source(items).map(loader)
    return _iterate(ds, local, data_cfg.num_workers, data_cfg.num_threads), num_batches


def bad_frame_ids(batch: dict[str, np.ndarray]) -> Sequence[int]:
    """Record indices of frames that failed to decode in this batch."""
    ids = np.asarray(batch["bad_frames"]).ravel()
    return [int(i) for i in ids[ids >= 0]]


class BadFrames:
    """Counts frames that failed to decode (training and evaluation alike): each is warned by
    name once, and past ``limit`` (config.data.max_bad_frames) a RuntimeError lists them all."""

    def __init__(self, source: Any, limit: int, what: str = "training"):
        self.source, self.limit, self.what, self.seen = source, limit, what, {}

    def update(self, batch: dict[str, np.ndarray]) -> None:
        for rid in bad_frame_ids(batch):
            if rid not in self.seen:
                self.seen[rid] = record_name(self.source[rid])
                logging.warning(
                    "%s: a frame does not decode and was replaced by its nearest good neighbour: "
                    "%s", self.what, self.seen[rid],
                )  # fmt: skip
        if len(self.seen) > self.limit:
            names = "\n  ".join(self.seen.values())
            raise RuntimeError(
                f"{len(self.seen)} frames failed to decode in {self.what} (config.data."
                f"max_bad_frames={self.limit}):\n  {names}"
            )

    def watch(self, batches: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        """``batches``, counting each one's undecodable frames as it passes."""
        for batch in batches:
            self.update(batch)
            yield batch
