"""AP3D + non-local on MARS: AP3DNLResNet50 (AP3D convs and embedded-Gaussian non-local blocks
in stages 2-3), AP3D's recipe.

guxinqian/AP3D at commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f: ``models/ResNet.py``
``AP3DNLResNet50`` = ``AP3DResNet50`` (configs/mars_ap3d_r50.py, loaded here) plus
``nl_idx = [[],[1, 3],[1, 3, 5],[]]``: a ``models/NonLocal.py`` ``NonLocalBlock3D(channels,
sub_sample=True)`` after blocks 2.1, 2.3, 3.1, 3.3 and 3.5 (``--arch ap3dnlres50``). The
non-local blocks end in a zero-scale BatchNorm, so with ImageNet weights step 0 is still C2D.

    python -m reid_jax.main --config configs/mars_ap3d_nl_r50.py --workdir runs/mars_ap3d_nl \\
        --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

Published: the AP3D paper (Gu et al. ECCV 2020; MARS, queries appended to the gallery) reports
AP3D with non-local blocks as a further variant; its number is not quoted here (see the paper's
tables). Not measured here. ``:tiny``: ResNet-18, non-local after 2.1 and 3.1.
"""

from pathlib import Path

from reid_jax.config_args import parse_arg
from reid_jax.config_base import load_config_file


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    """AP3D-NL's recipe (``tiny``: as mars_ap3d_r50.py)."""
    a = parse_arg(arg, __file__, tiny=False)
    c = load_config_file(Path(__file__).with_name("mars_ap3d_r50.py"), "tiny" if a.tiny else "")
    c.model.temporal.nonlocal_blocks = "2.1,2.3,3.1,3.3,3.5"  # nl_idx = [[],[1, 3],[1, 3, 5],[]]
    if a.tiny:
        c.model.temporal.nonlocal_blocks = "2.1,3.1"
    return c
