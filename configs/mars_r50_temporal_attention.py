"""ResNet-50 on MARS, the recipe of ``mars_r50_tp.py`` with fusion ``temporal_attention``.

Temporal attention (TA, Gao & Nevatia 2018): full-map spatial conv, 1-D temporal
conv, softmax over T (un-clipped scores).

    python -m reid_jax.main --config configs/mars_r50_temporal_attention.py \\
        --workdir runs/mars_r50_temporal_attention --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

Only ``model.fusion`` and ``model.fusion_kwargs`` differ from mars_r50_tp.py (which this file loads,
so the two cannot drift); ``get_config("tiny")`` is the smoke variant as there.
"""

from pathlib import Path

from reid_jax.config_base import load_config_file


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    """The mars_r50_tp recipe (``arg`` as there: "" or "tiny") with this file's fusion."""
    c = load_config_file(Path(__file__).with_name("mars_r50_tp.py"), arg)
    c.model.fusion = "temporal_attention"
    c.model.fusion_kwargs.hidden = 256
    c.model.fusion_kwargs.temporal_kernel = 3
    return c
