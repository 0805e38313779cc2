"""ResNet-50 temporal average pooling on prid2011: the MARS recipe with this dataset's protocol.

See docs/datasets.md for the layout of `raw_dir`. One trial per run: train each
``--config.data.split`` (0-9) in its own workdir and aggregate with the evaluation job.

    python -m reid_jax.main --config configs/prid2011_r50_tp.py \\
        --workdir runs/prid2011_r50_tp/split_0 \\
        --config.data.raw_dir=/path/to/prid2011 --config.data.split=0 \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth
"""

from reid_jax.config_args import parse_arg
from reid_jax.config_base import base_config


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    parse_arg(arg, __file__)  # no arguments
    c = base_config()
    c.data.name = "prid2011"
    c.data.raw_dir = "data/prid2011"
    c.data.data_dir = "data/tfds"
    c.model.arch = "resnet50"
    c.model.dtype = "bfloat16"
    # The gallery is the other camera (iLIDS-VID, PRID) or the gallery folder (Duke): the legacy
    # rules give exactly that (docs/datasets.md); the official MARS rules would not.
    c.evals.retrieval.protocols = ("legacy",)
    c.checkpoint.best_metric = "retrieval/legacy/mAP"
    return c
