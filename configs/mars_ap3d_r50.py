"""AP3D on MARS: AP3D's ResNet-50 (appearance-preserving 3D convs in stages 2-3), AP3D's recipe.

guxinqian/AP3D at commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f: ``models/ResNet.py``
``AP3DResNet50`` = ``ResNet503D(num_classes, AP3D.APP3DC, c3d_idx=[[],[0, 2],[0, 2, 4],[]],
nl_idx=[[],[],[],[]])`` with ``temperature=4, contrastive_att=True`` and ``models/AP3D.py``
``APP3DC(time_dim=3)``; ``train-mars-ap3d.sh`` trains ``--arch ap3dres50`` with ``train.py``'s
defaults, which are exactly configs/mars_ap3d_c2d_r50.py (loaded here: T=4 at stride 8, every
tracklet once per epoch, max pooling, plain CE + cosine triplet on the BN feature, Adam 3e-4,
240 epochs, x0.1 at 60/120/180, cosine test on the BN feature, queries appended to the gallery).
Only the backbone changes: config.model.temporal (docs/models.md). The ImageNet ResNet-50 loads
into it unchanged (the temporal kernels start at zero, so step 0 is the C2D model).

    python -m reid_jax.main --config configs/mars_ap3d_r50.py --workdir runs/mars_ap3d \\
        --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

Published (AP3D paper, Gu et al. ECCV 2020; MARS, queries appended to the gallery = reid_jax's
``appended`` protocol, all frames at test time): 85.1 mAP / 90.1 Rank-1. Not measured here.
Differences from the authors' code: those of mars_ap3d_c2d_r50.py (no BNNeck shift / classifier
bias). ``:tiny``: the smoke variant on ResNet-18, AP3D's rule ("2.0,3.0").
"""

from pathlib import Path

from reid_jax.config_args import parse_arg
from reid_jax.config_base import load_config_file


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    """AP3D's recipe (``tiny``: as mars_ap3d_c2d_r50.py, on ResNet-18)."""
    a = parse_arg(arg, __file__, tiny=False)
    c = load_config_file(Path(__file__).with_name("mars_ap3d_c2d_r50.py"), "tiny" if a.tiny else "")
    c.model.temporal.kind = "ap3d"  # ResNet503D(..., AP3D.APP3DC, ...)
    c.model.temporal.blocks = "2.0,2.2,3.0,3.2,3.4"  # c3d_idx = [[],[0, 2],[0, 2, 4],[]]
    c.model.temporal.nonlocal_blocks = ""  # nl_idx = [[],[],[],[]]
    c.model.temporal.time_dim = 3  # APP3DC(time_dim=3)
    c.model.temporal.temperature = 4.0  # ResNet503D(temperature=4)
    c.model.temporal.contrastive_att = True  # ResNet503D(contrastive_att=True)
    if a.tiny:
        c.model.temporal.blocks = "2.0,3.0"  # ResNet-18 has 2 blocks per stage
    return c
