"""The research recipe: ResNet-50 on MARS, temporal average pooling (TP) or another fusion.

ResNet-50 (last stride 1), 256x128, T=4 frames (restricted random sampling), P=8 ids x K=4
tracklets, Adam 3e-4 with weight decay 5e-4 and step decay x0.1 at epochs 200 and 400, label-
smoothed cross-entropy + batch-hard triplet (margin 0.3), 520 epochs, evaluation (all frames,
the three MARS protocols) every 40 epochs from epoch 360 - the table of the research note.

    python -m reid_jax.main --config configs/mars_r50.py --workdir runs/mars_r50_tp \\
        --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth
    python -m reid_jax.main --config configs/mars_r50.py:fusion=templet \\
        --workdir runs/mars_r50_templet --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

Arguments (``configs/mars_r50.py:fusion=templet,tiny``):

- ``fusion``: a key of ``FUSIONS``, the fusion with its options written out in full (only
  ``model.fusion`` and ``model.fusion_kwargs`` change with it):
  ``tp`` (the default: temporal average pooling, ``model.fusion="mean"``);
  ``max`` (channel-wise max over T of the GAP frame features);
  ``temporal_attention`` (TA, Gao & Nevatia 2018: full-map spatial conv, 1-D temporal conv,
  softmax over T, un-clipped scores);
  ``temporal_conv`` (a learned 1-D temporal convolution, kernel size 0 = T, initialised as
  TP: the note's item 2);
  ``lstm`` (an LSTM over the GAP frame features, outputs averaged: the RNN baseline; D = hidden);
  ``cosine_center`` (the note's method: cosine-to-centre softmax weights, pairwise levels
  T -> T/2 -> ... -> 1, tau = 1, the setting of the note's table);
  ``templet`` (the note's next experiment: pairwise templet attention between frame maps with
  bounded 1/cos (alpha_max), normalised square and a residual refinement block);
  ``two_branch`` (appearance = cosine_center + motion = templet, concatenated: D = 2C = 4096).
- ``tiny``: a seconds-long smoke variant (ResNet-18 width 8, 64x32, 2 steps).
"""

from reid_jax.config_args import parse_arg
from reid_jax.config_base import base_config

COSINE_CENTER = dict(tau=1.0, learn_tau=False, mode="pairwise", weighting="softmax", iterations=0)
TEMPLET = dict(alpha_max=10.0, per_channel=False, refine=True, reduction=4)
# The ``fusion`` argument -> (model.fusion, model.fusion_kwargs).
FUSIONS = {
    "tp": ("mean", {}),
    "max": ("max", {}),
    "temporal_attention": ("temporal_attention", dict(hidden=256, temporal_kernel=3)),
    "temporal_conv": ("temporal_conv", dict(kernel_size=0)),
    "lstm": ("lstm", dict(hidden=512)),
    "cosine_center": ("cosine_center", COSINE_CENTER),
    "templet": ("templet", TEMPLET),
    "two_branch": ("two_branch", dict(combine="concat", appearance=COSINE_CENTER, motion=TEMPLET)),
}


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    a = parse_arg(arg, __file__, fusion=tuple(FUSIONS), tiny=False)
    c = base_config()
    c.data.name = "mars"
    c.data.raw_dir = "data/MARS"
    c.data.data_dir = "data/tfds"
    c.data.num_workers = 8
    c.data.num_threads = 8
    c.data.test_batch_size = 256
    c.model.arch = "resnet50"
    c.model.dtype = "bfloat16"
    c.model.fusion, kwargs = FUSIONS[a.fusion]
    c.model.fusion_kwargs.update(kwargs)
    c.num_epochs = 520
    c.eval_every_epochs = 40
    c.eval_start_epochs = 360
    c.optim.lr = 3e-4
    c.optim.decay_epochs = [200, 400]
    # Rank by cosine on the BN feature, as BoT, AP3D, PSTA and TF-CLIP do (docs/recipes.md).
    c.evals.retrieval.distance = "cosine"
    if a.tiny:
        c.model.arch, c.model.width, c.model.dtype = "resnet18", 8, "float32"
        c.data.height, c.data.width = 64, 32
        c.data.num_workers = 0
        c.num_steps = 2
    return c
