"""The PyTorch baseline of the training step: how video re-ID is trained today.

torchvision-layout ResNet (bench/parity_torch.py, last stride 1) on all B*T frames, spatial then
temporal average pooling (TP), BNNeck (BatchNorm1d with the shift frozen at zero), bias-free
classifier, label-smoothed cross entropy + batch-hard triplet (Euclidean, margin 0.3), and
torch.optim.Adam(lr=3e-4, weight_decay=5e-4): the same model, loss and optimiser as reid_jax's
``train_step`` with the default config and ``fusion="mean"``. Input is what a PyTorch loader
yields: normalised float32 NCHW frames. torch is a bench-only dependency.

    .venv/bin/python bench/reference_torch.py [--arch resnet50 --height 256 --width 128
        --seq_len 4 --p 8 --k 4 --steps 5 --threads 2]
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.parity_torch import ARCHS, ResNet


class TorchReID(nn.Module):
    """ResNet per frame -> temporal average pooling -> BNNeck -> bias-free classifier."""

    def __init__(self, arch: str, num_classes: int, seq_len: int, width: int = 64):
        super().__init__()
        self.seq_len = seq_len
        self.backbone = ResNet(arch, last_stride=1, width=width)
        del self.backbone.fc  # no ImageNet head: reid_jax's backbone has none either
        dim = 8 * width * ARCHS[arch][0].expansion
        self.bnneck = nn.BatchNorm1d(dim)
        self.bnneck.bias.requires_grad_(False)  # BNNeck: shift frozen at zero
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        for m in self.backbone.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B*T, 3, H, W] -> (logits [B, classes], pre-BNNeck features [B, D])."""
        maps = self.backbone.features(frames)
        feats = maps.mean(dim=(2, 3)).view(-1, self.seq_len, maps.shape[1]).mean(dim=1)
        return self.classifier(self.bnneck(feats)), feats


def batch_hard_triplet(feats: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) with reid_jax's masking of the anchor."""
    sq = (feats * feats).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * feats @ feats.t()).clamp(min=1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=feats.device)
    hardest_pos = dist.masked_fill(~same | eye, -1.0).max(1).values
    far = dist.detach().max() + 1.0
    hardest_neg = torch.where(same, far, dist).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def make_reference(
    arch: str,
    num_classes: int,
    seq_len: int,
    lr: float = 3e-4,
    weight_decay: float = 5e-4,
    width: int = 64,
) -> tuple[TorchReID, torch.optim.Optimizer]:
    """The reference model in train mode and its Adam (L2 in the gradient, as reid_jax 'adam')."""
    model = TorchReID(arch, num_classes, seq_len, width).train()
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay
    )
    return model, opt


def train_step(
    model: TorchReID,
    opt: torch.optim.Optimizer,
    frames: torch.Tensor,
    labels: torch.Tensor,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """One optimiser step: CE (label smoothing 0.1) + batch-hard triplet (margin 0.3); the loss."""
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits, feats = model(frames)
    loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
    loss = loss + batch_hard_triplet(feats.float(), labels, margin=0.3)
    loss.backward()
    opt.step()
    return float(loss.detach())


def random_batch(
    p: int, k: int, seq_len: int, height: int, width: int, seed: int = 0, channels_last=False
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """A P x K batch: (torch frames [B*T,3,H,W] normalised f32, torch labels, and the same clip as
    uint8 [B,T,H,W,3] plus int32 labels for reid_jax)."""
    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, (p * k, seq_len, height, width, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(p, dtype=np.int32), k)
    mean = np.float32(255.0) * np.asarray([0.485, 0.456, 0.406], np.float32)
    std = np.float32(255.0) * np.asarray([0.229, 0.224, 0.225], np.float32)
    frames = ((clip.astype(np.float32) - mean) / std).reshape(-1, height, width, 3)
    frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    frames_t = frames_t.contiguous(memory_format=memory)
    return frames_t, torch.from_numpy(labels.astype(np.int64)), clip, labels


def param_count(model: nn.Module) -> int:
    """Number of trainable scalars (BNNeck's frozen zero shift excluded, as reid_jax has none)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    """Time the reference step alone and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50", choices=sorted(ARCHS))
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=4)
    parser.add_argument("--p", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--num_classes", type=int, default=625)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--channels_last", action="store_true")
    parser.add_argument("--max_load", type=float, default=1.5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, opt = make_reference(args.arch, args.num_classes, args.seq_len)
    frames, labels, _, _ = random_batch(
        args.p, args.k, args.seq_len, args.height, args.width, channels_last=args.channels_last
    )
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    train_step(model, opt, frames, labels)  # warm-up

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            train_step(model, opt, frames, labels)
        return time.perf_counter() - t0

    times, loads = common.alternate({"torch": run}, args.rounds, args.max_load)
    step_s = [t / args.steps for t in times["torch"]]
    n_frames = args.p * args.k * args.seq_len
    print("\n".join(common.machine_lines()))
    print(
        f"torch reference {args.arch} {args.height}x{args.width} T={args.seq_len} "
        f"P x K={args.p}x{args.k}, {param_count(model):,} parameters"
    )
    print(
        common.markdown_table(
            ["step ms", "frames/s", "load"],
            [
                [
                    common.fmt_spread(step_s, 1e3),
                    f"{n_frames / common.spread(step_s)['median']:.1f}",
                    common.fmt_load(loads),
                ]
            ],
        )
    )


if __name__ == "__main__":
    main()
