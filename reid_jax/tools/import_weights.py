"""Convert a torchvision/timm ResNet state dict once into an orbax backbone checkpoint.

    python -m reid_jax.tools.import_weights --from resnet50-11ad3fa6.pth --arch resnet50 --out DIR

DIR then holds the backbone's params and batch_stats (Linen layout, float32) plus metadata (arch,
width, source file, the ImageNet mean/std the weights expect); point ``config.model.pretrained``
at DIR, or directly at the original .safetensors/.pth file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax

from reid_jax.models import pretrained
from reid_jax.models.resnet import RESNETS, make_resnet


def convert(
    source: str | Path,
    arch: str,
    out: str | Path,
    *,
    width: int = 64,
    prefix: str | None = None,
    force: bool = False,
) -> Path:
    """Read ``source``, check it against ``arch`` (ValueError listing every difference), save."""
    out = Path(out).absolute()
    if out.exists() and not force:
        raise ValueError(f"--out {out} already exists; pass --force to overwrite it")
    module = make_resnet(arch, width=width)
    variables = pretrained.load_variables(
        source, pretrained.abstract_variables(module), prefix=prefix
    )
    return pretrained.save_orbax(
        out, variables, arch=arch, width=width, source=str(Path(source).absolute()), force=force
    )


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; prints what it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--from", dest="source", required=True, help=".safetensors, .pth/.pt/.bin or orbax dir"
    )
    parser.add_argument("--arch", default="resnet50", choices=sorted(RESNETS))
    parser.add_argument("--out", required=True, help="output orbax checkpoint directory")
    parser.add_argument("--width", type=int, default=64, help="stem width (64 for ImageNet)")
    parser.add_argument("--prefix", default=None, help="key prefix; auto-detected by default")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    args = parser.parse_args(argv)
    try:
        out = convert(
            args.source, args.arch, args.out, width=args.width, prefix=args.prefix, force=args.force
        )
    except (ValueError, FileNotFoundError, ImportError) as e:
        parser.exit(1, f"import_weights: error: {e}\n")
    variables, meta = pretrained.read_orbax(out)
    n = sum(int(x.size) for x in jax.tree.leaves(variables["params"]))
    print(f"wrote {out}: {meta['arch']} backbone, {n:,} parameters, from {meta['source']}")


if __name__ == "__main__":
    main()
