"""The research recipe: ResNet-50 temporal average pooling (TP) on MARS.

ResNet-50 (last stride 1), 256x128, T=4 frames (restricted random sampling), P=8 ids x K=4
tracklets, Adam 3e-4 with weight decay 5e-4 and step decay x0.1 at epochs 200 and 400, label-
smoothed cross-entropy + batch-hard triplet (margin 0.3), 520 epochs, evaluation (all frames,
the three MARS protocols) every 40 epochs from epoch 360 - the table of the research note.

    python -m reid_jax.main --config configs/mars_r50_tp.py --workdir runs/mars_r50_tp \\
        --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

``get_config("tiny")`` is a seconds-long smoke variant (ResNet-18 width 8, 64x32, 2 steps).
"""

from reid_jax.config_base import base_config


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    c = base_config()
    c.data.name = "mars"
    c.data.raw_dir = "data/MARS"
    c.data.data_dir = "data/tfds"
    c.data.num_workers = 8
    c.data.num_threads = 8
    c.data.test_batch_size = 256
    c.model.arch = "resnet50"
    c.model.dtype = "bfloat16"
    c.num_epochs = 520
    c.eval_every_epochs = 40
    c.eval_start_epochs = 360
    c.optim.lr = 3e-4
    c.optim.decay_epochs = [200, 400]
    # Rank by cosine on the BN feature, as BoT, AP3D, PSTA and TF-CLIP do (docs/recipes.md).
    c.evals.retrieval.distance = "cosine"
    if arg == "tiny":
        c.model.arch, c.model.width, c.model.dtype = "resnet18", 8, "float32"
        c.data.height, c.data.width = 64, 32
        c.data.num_workers = 0
        c.num_steps = 2
    return c
