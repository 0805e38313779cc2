"""ResNet-50 on MARS, the recipe of ``mars_r50_tp.py`` with fusion ``cosine_center``.

The research note's method: cosine-to-centre softmax weights, pairwise levels
(T -> T/2 -> ... -> 1), tau = 1 (the note's table came from this setting).

    python -m reid_jax.main --config configs/mars_r50_cosine_center.py \\
        --workdir runs/mars_r50_cosine_center --config.data.raw_dir=/path/to/MARS

Only ``model.fusion`` and ``model.fusion_kwargs`` differ from mars_r50_tp.py (which this file loads,
so the two cannot drift); ``get_config("tiny")`` is the smoke variant as there.
"""

import importlib.util
from pathlib import Path


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    """The mars_r50_tp recipe (``arg`` as there: "" or "tiny") with this file's fusion."""
    spec = importlib.util.spec_from_file_location(
        "mars_r50_tp", Path(__file__).with_name("mars_r50_tp.py")
    )
    tp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tp)
    c = tp.get_config(arg)
    c.model.fusion = "cosine_center"
    c.model.fusion_kwargs.tau = 1.0
    c.model.fusion_kwargs.learn_tau = False
    c.model.fusion_kwargs.mode = "pairwise"
    c.model.fusion_kwargs.weighting = "softmax"
    c.model.fusion_kwargs.iterations = 0
    return c
