"""Parity of imported ResNet weights: a torchvision-layout torch ResNet vs reid_jax, float32.

torchvision is not installed (it does not import beside our torch), so the reference ResNet is
written here with torchvision's exact module names (conv1, bn1, layer1.0.conv1, downsample.0/1,
fc). It gets random weights AND random BatchNorm running statistics, its state dict is saved as
``.pth`` (torch.save) and ``.safetensors`` (``write_safetensors``), both are imported with
``reid_jax.models.pretrained.load_backbone``, and the final feature maps on one normalised input
are compared: rel = max|jax - torch| / max|torch| (torch NCHW transposed to NHWC).

    python bench/parity_torch.py [--arch resnet50] [--height 256 --width 128 --batch 2]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import jax
import numpy as np
import torch
from torch import nn

from reid_jax.data.transforms import normalize
from reid_jax.models import resnet as jax_resnet
from reid_jax.models.pretrained import load_backbone, write_safetensors

# torchvision's published parameter counts (with the 1000-way fc), to check the layout.
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet50": 25_557_032}


class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv-bn-relu-conv-bn plus shortcut, then relu."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (v1.5: stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """1x1-3x3-1x1 with BN/relu, plus shortcut, then relu."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


ARCHS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """torchvision.models.resnet.ResNet with a configurable stride for layer4 and width."""

    def __init__(self, arch: str, last_stride: int = 2, num_classes: int = 1000, width: int = 64):
        super().__init__()
        block, layers = ARCHS[arch]
        self.inplanes = width  # width: stem/stage-1 channels, as reid_jax's ResNet.width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0], 1)
        self.layer2 = self._make_layer(block, 2 * width, layers[1], 2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], 2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], last_stride)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        """A stage; the first block gets the stride and a 1x1 projection when shapes change."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The layer4 feature map [N, C, h, w]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (unused by the parity check; fc exists so the importer must drop it)."""
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def reference_model(arch: str, last_stride: int, seed: int = 0) -> ResNet:
    """Reference in eval mode with random weights and random BatchNorm running statistics."""
    model = ResNet(arch, last_stride)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (), generator=g)))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.01 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def save_state_dict(model: nn.Module, directory: Path, prefix: str = "") -> dict[str, Path]:
    """Save the state dict (keys under ``prefix``) as .pth and .safetensors; paths by format."""
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    paths = {"pth": directory / "weights.pth", "safetensors": directory / "weights.safetensors"}
    torch.save(sd, paths["pth"])
    write_safetensors(paths["safetensors"], {k: v.numpy() for k, v in sd.items()})
    return paths


def random_input(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8-scale random images normalised with the pipeline's ImageNet constants, NHWC f32."""
    pixels = np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3))
    return normalize(pixels)


def torch_features(model: ResNet, x_nhwc: np.ndarray) -> np.ndarray:
    """The reference feature map for NHWC input, returned NHWC."""
    with torch.no_grad():
        out = model.features(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous())
    return out.permute(0, 2, 3, 1).numpy()


def rel_max_diff(out: np.ndarray, ref: np.ndarray) -> float:
    """max|out - ref| / max|ref|."""
    return float(np.max(np.abs(np.asarray(out) - ref)) / np.max(np.abs(ref)))


@functools.partial(jax.jit, static_argnums=0)
def forward(module: jax_resnet.ResNet, variables: dict, x: np.ndarray) -> jax.Array:
    """Jitted eval-mode feature map; cached per (module, shapes), so formats share one compile."""
    return module.apply(variables, x, train=False)


def compare(
    arch: str, last_stride: int, x: np.ndarray, directory: Path, precision: str = "highest"
) -> dict[str, float]:
    """rel_max_diff of the jax feature map vs torch, per saved format."""
    model = reference_model(arch, last_stride)
    ref = torch_features(model, x)
    results = {}
    for fmt, path in save_state_dict(model, directory).items():
        module, variables = load_backbone(path, arch, last_stride)
        with jax.default_matmul_precision(precision):
            out = forward(module, variables, x)
        assert out.shape == ref.shape, (out.shape, ref.shape)
        results[fmt] = rel_max_diff(out, ref)
    return results


def main() -> None:
    """Print the parity figure for both last strides and both file formats."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50", choices=sorted(ARCHS))
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--precision", default="highest", choices=["highest", "default"])
    args = parser.parse_args()
    n = sum(p.numel() for p in ResNet(args.arch).parameters())
    print(f"{args.arch}: {n:,} torch parameters (torchvision: {TORCHVISION_PARAMS.get(args.arch)})")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}")
    x = random_input(args.batch, args.height, args.width)
    for last_stride in (2, 1):
        with tempfile.TemporaryDirectory() as tmp:
            results = compare(args.arch, last_stride, x, Path(tmp), args.precision)
        for fmt, rel in results.items():
            verdict = "PASS" if rel <= 1e-4 else "FAIL"
            print(
                f"{args.arch} last_stride={last_stride} {fmt:12s} input {list(x.shape)} "
                f"precision={args.precision}: rel max diff {rel:.2e} ({verdict}: <= 1e-4)"
            )


if __name__ == "__main__":
    main()
