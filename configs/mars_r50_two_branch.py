"""ResNet-50 on MARS, the recipe of ``mars_r50_tp.py`` with fusion ``two_branch``.

Appearance (cosine_center) + motion (templet), concatenated: D = 2C = 4096.

    python -m reid_jax.main --config configs/mars_r50_two_branch.py \\
        --workdir runs/mars_r50_two_branch --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

Only ``model.fusion`` and ``model.fusion_kwargs`` differ from mars_r50_tp.py (which this file loads,
so the two cannot drift); ``get_config("tiny")`` is the smoke variant as there.
"""

from pathlib import Path

from reid_jax.config_base import load_config_file


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    """The mars_r50_tp recipe (``arg`` as there: "" or "tiny") with this file's fusion."""
    c = load_config_file(Path(__file__).with_name("mars_r50_tp.py"), arg)
    c.model.fusion = "two_branch"
    c.model.fusion_kwargs.combine = "concat"
    c.model.fusion_kwargs.appearance.tau = 1.0  # the branches' options: one sub-dict each
    c.model.fusion_kwargs.appearance.learn_tau = False
    c.model.fusion_kwargs.appearance.mode = "pairwise"
    c.model.fusion_kwargs.appearance.weighting = "softmax"
    c.model.fusion_kwargs.appearance.iterations = 0
    c.model.fusion_kwargs.motion.alpha_max = 10.0
    c.model.fusion_kwargs.motion.per_channel = False
    c.model.fusion_kwargs.motion.refine = True
    c.model.fusion_kwargs.motion.reduction = 4
    return c
