"""ResNet-50 temporal average pooling on ilidsvid: the MARS recipe with this dataset's protocol.

See docs/datasets.md for the layout of `raw_dir`. One trial per run: train each
``--config.data.split`` (0-9) in its own workdir and aggregate with the evaluation job.

    python -m reid_jax.main --config configs/ilidsvid_r50_tp.py \\
        --workdir runs/ilidsvid_r50_tp/split_0 \\
        --config.data.raw_dir=/path/to/ilidsvid --config.data.split=0 \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth
"""

from reid_jax.config_args import parse_arg
from reid_jax.config_base import base_config


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    parse_arg(arg, __file__)  # no arguments
    c = base_config()
    c.data.name = "ilidsvid"
    c.data.raw_dir = "data/ilidsvid"
    c.data.data_dir = "data/tfds"
    c.model.arch = "resnet50"
    c.model.dtype = "bfloat16"
    # The gallery is the other camera (iLIDS-VID, PRID) or the gallery folder (Duke): the legacy
    # rules give exactly that (docs/datasets.md); the official MARS rules would not.
    c.evals.retrieval.protocols = ("legacy",)
    c.checkpoint.best_metric = "retrieval/legacy/mAP"
    return c
