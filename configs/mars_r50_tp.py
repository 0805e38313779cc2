"""The research recipe with temporal average pooling: an alias of ``configs/mars_r50.py``.

    python -m reid_jax.main --config configs/mars_r50.py --workdir runs/mars_r50_tp \\
        --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

Kept only while configs/mars_r50_two_branch.py loads it; use mars_r50.py (``:tiny`` as there).
"""

from pathlib import Path

from reid_jax.config_args import parse_arg
from reid_jax.config_base import load_config_file


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    a = parse_arg(arg, __file__, tiny=False)
    return load_config_file(Path(__file__).with_name("mars_r50.py"), "tiny" if a.tiny else "")
