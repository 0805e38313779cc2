"""Training input throughput: reid_jax's grain pipeline against a PyTorch DataLoader.

Both sides do the same work per clip on a SynthMARS tree (MARS layout, 256x128 JPEGs): P x K
identity sampling (``sampling.pk_epoch``), restricted random frame sampling, JPEG decoding, and
one clip-consistent augmentation (resize, zero-pad + random crop, horizontal flip, random
erasing), with the same number of worker processes.

- grain: ``pipeline.train_iterator`` over the prepared array_record dataset (simplejpeg decode,
  numpy transforms, uint8 output; normalisation happens on the device in ``train_step``).
- PyTorch: the way video re-ID code bases load today: a ``Dataset`` opening each frame's JPEG
  file with Pillow, torchvision-style transforms written with Pillow/torch ops (Resize, ToTensor,
  Pad + RandomCrop, RandomHorizontalFlip, Normalize, RandomErasing; one draw per clip), collated
  by ``torch.utils.data.DataLoader`` into float32 [B, T, 3, H, W].

Per round each loader gets a fresh iterator; the first ``--warmup`` batches (worker start-up and
filled prefetch buffers) are discarded, then ``--batches`` batches are timed; grain and PyTorch
alternate round by round.

    .venv/bin/python bench/input_pipeline.py [--workers 2 --p 8 --k 4 --batches 20 --rounds 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import torch
from absl import flags
from PIL import Image

from reid_jax.config_base import base_config
from reid_jax.data import builders, pipeline, prepare, sampling
from reid_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class TorchClips(torch.utils.data.Dataset):
    """Global item -> (normalised float32 clip [T,3,H,W], label), planned as pipeline.TrainClips."""

    def __init__(self, paths: list[str], index: Any, cfg: Any, seed: int, num_items: int):
        self.paths, self.index, self.cfg, self.seed = paths, index, cfg, seed
        self.batch = cfg.p * cfg.k
        self.num_items = num_items
        self.spe = sampling.steps_per_epoch(index.num_classes, cfg.p)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self._plans: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_items

    def _tracklet(self, item: int) -> int:
        step, slot = divmod(item, self.batch)
        epoch, row = divmod(step, self.spe)
        if epoch not in self._plans:
            self._plans = {
                epoch: sampling.pk_epoch(self.index.label, self.cfg.p, self.cfg.k, self.seed, epoch)
            }
        return int(self._plans[epoch][row, slot])

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        c = self.cfg
        t = self._tracklet(item)
        rng = np.random.default_rng([self.seed, item])
        start, length = int(self.index.start[t]), int(self.index.length[t])
        frames = start + sampling.restricted_random(length, c.seq_len, rng)
        imgs = []
        for f in frames:  # Resize + ToTensor, frame by frame as torchvision does
            with Image.open(self.paths[f]) as img:
                img = img.convert("RGB").resize((c.width, c.height), Image.BILINEAR)
            imgs.append(torch.from_numpy(np.array(img)))  # a copy, as ToTensor
        clip = torch.stack(imgs).permute(0, 3, 1, 2).float().div_(255.0)  # [T,3,H,W]
        # Pad + RandomCrop with one offset for the clip.
        dy, dx = (int(v) for v in rng.integers(0, 2 * c.pad + 1, size=2))
        clip = torch.nn.functional.pad(clip, (c.pad, c.pad, c.pad, c.pad))
        clip = clip[:, :, dy : dy + c.height, dx : dx + c.width]
        if rng.random() < c.flip_p:  # RandomHorizontalFlip
            clip = clip.flip(3)
        clip = (clip - self.mean) / self.std  # Normalize
        if rng.random() < c.erase_p:  # RandomErasing(value=0) in normalised space
            clip = _erase(clip, rng)
        return clip.contiguous(), int(self.index.label[t])


def _erase(clip: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """torchvision RandomErasing's rectangle draw (area 0.02-0.4, aspect 0.3-3.33), zero fill."""
    _, _, h, w = clip.shape
    for _ in range(10):
        target = rng.uniform(0.02, 0.4) * h * w
        ratio = np.exp(rng.uniform(np.log(0.3), np.log(3.33)))
        eh, ew = round(float(np.sqrt(target * ratio))), round(float(np.sqrt(target / ratio)))
        if eh < h and ew < w:
            y, x = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            clip[:, :, y : y + eh, x : x + ew] = 0.0
            return clip
    return clip


def data_config(args: argparse.Namespace) -> Any:
    """config.data for a SynthMARS tree under ``args.data_root`` with the bench's batch shape."""
    c = base_config().data
    c.name = "synth_mars"
    c.raw_dir = str(Path(args.data_root) / "raw")
    c.data_dir = str(Path(args.data_root) / "tfds")
    c.synth.update(
        {
            "num_ids": args.num_ids,
            "height": args.height,
            "width": args.width,
            "length_scale": args.length_scale,
        }
    )
    c.height, c.width, c.seq_len, c.p, c.k = args.height, args.width, args.seq_len, args.p, args.k
    c.num_workers, c.num_threads = args.workers, args.threads
    return c


def run_loader(make_iter: Any, warmup: int, batches: int) -> float:
    """Seconds to pull ``batches`` batches after ``warmup`` from a fresh iterator."""
    it = make_iter()
    try:
        for _ in range(warmup):
            next(it)
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        return time.perf_counter() - t0
    finally:
        close = getattr(it, "close", None) or getattr(it, "_shutdown_workers", None)
        if close is not None:
            close()
        del it


def main(argv: list[str] | None = None) -> list[list[str]]:
    """Prepare SynthMARS if needed, time both loaders alternately, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", default=str(common.ROOT / "data" / "bench_synth"))
    parser.add_argument("--num_ids", type=int, default=24)
    parser.add_argument("--length_scale", type=float, default=0.25)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=4)
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="worker processes, both sides")
    parser.add_argument("--threads", type=int, default=4, help="grain reader threads per worker")
    parser.add_argument("--warmup", type=int, default=0, help="0 = 2 x workers + 2")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max_load", type=float, default=1.5)
    args = parser.parse_args(argv)
    flags.FLAGS(["input_pipeline"])  # grain reads absl flags; the bench's own are argparse
    torch.set_num_threads(1)  # DataLoader workers are single-threaded; so is the main process
    cfg = data_config(args)
    prepare.ensure_prepared(cfg)
    source, index = builders.load_split(cfg.name, cfg.data_dir, "train")
    paths = [str(Path(cfg.raw_dir) / builders.record_name(source[i])) for i in range(len(source))]
    warmup = args.warmup or 2 * args.workers + 2
    steps = warmup + args.batches
    b = args.p * args.k
    dataset = TorchClips(paths, index, cfg, seed=0, num_items=steps * b)

    def grain_iter() -> Any:
        return pipeline.train_iterator(source, index, cfg, num_steps=steps, seed=0)

    def torch_iter() -> Any:
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=b, shuffle=False, drop_last=True, num_workers=args.workers
        )
        return iter(loader)

    first = next(grain_iter())  # shapes check (and page cache warm-up of the records)
    clip, _ = next(torch_iter())
    assert first["clip"].shape == (b, args.seq_len, args.height, args.width, 3), first["clip"].shape
    assert tuple(clip.shape) == (b, args.seq_len, 3, args.height, args.width), clip.shape
    runners = {
        "grain": lambda: run_loader(grain_iter, warmup, args.batches),
        "torch": lambda: run_loader(torch_iter, warmup, args.batches),
    }
    times, loads = common.alternate(runners, args.rounds, args.max_load)
    frames = args.batches * b * args.seq_len
    per = max(args.workers, 1)
    fps = {k: [frames / t for t in v] for k, v in times.items()}
    ratios = [g / t for g, t in zip(fps["grain"], fps["torch"], strict=True)]
    rows = [
        [
            name,
            f"{args.workers}",
            common.fmt_spread([f / args.seq_len for f in fps[name]]),
            common.fmt_spread(fps[name]),
            common.fmt_spread([f / per for f in fps[name]]),
        ]
        for name in ("grain", "torch")
    ]
    rows[0].append(common.fmt_spread(ratios, 1.0, 2))
    rows[1].append("1")
    for row in rows:
        row.append(common.fmt_load(loads))
    print("\n".join(common.machine_lines()))
    print(
        f"SynthMARS train split: {len(index.pid)} tracklets, {len(source)} frames at "
        f"{args.height}x{args.width}; P x K = {args.p}x{args.k}, T={args.seq_len}; "
        f"{args.workers} workers each (grain: {args.threads} reader threads per worker); "
        f"{args.rounds} rounds x {args.batches} batches after {warmup} warm-up; median (min-max)"
    )
    headers = [
        "loader",
        "workers",
        "clips/s",
        "frames/s",
        "frames/s per worker",
        "grain/torch",
        "load",
    ]
    print(common.markdown_table(headers, rows))
    return rows


if __name__ == "__main__":
    main()
