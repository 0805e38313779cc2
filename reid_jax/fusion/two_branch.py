"""``two_branch``: appearance from ``cosine_center`` (what the frames share), motion from
``templet`` (what varies between them), concatenated or summed: the note's "appearance from the
invariant features, motion semantics from the varying ones".
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.fusion.cosine import CosineCenterFusion
from reid_jax.fusion.ops import check_choice
from reid_jax.fusion.templet import TempletFusion

COMBINES = ("concat", "sum")


def combine_branches(appearance: jax.Array, motion: jax.Array, combine: str) -> jax.Array:
    """[B,C] + [B,C] -> [B,2C] (``concat``: appearance first) or [B,C] (``sum``)."""
    check_choice("combine", combine, COMBINES)
    if combine == "concat":
        return jnp.concatenate([appearance, motion], axis=-1)
    return appearance + motion


class TwoBranchFusion(nn.Module):
    """cosine_center (submodule "appearance") + templet (submodule "motion"); D = 2C or C.

    Options are those of both branches (tau, learn_tau, mode, weighting, iterations; alpha_max,
    per_channel, refine, reduction, rescale) plus ``combine``. Parameters: the sum of the branches'
    (see CosineCenterFusion and TempletFusion). aux: the appearance branch's "weights" (and
    "frame_weights"), the motion branch's as "motion_weights" / "motion_frame_weights".
    """

    combine: str = "concat"
    tau: float = 1.0
    learn_tau: bool = False
    mode: str = "pairwise"
    weighting: str = "softmax"
    iterations: int = 0
    alpha_max: float = 10.0
    per_channel: bool = False
    refine: bool = True
    reduction: int = 4
    rescale: bool = False

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        """Fuse [B,T,h,w,C] maps into [B,2C] (concat) or [B,C] (sum)."""
        check_choice("combine", self.combine, COMBINES)
        appearance, app_aux = CosineCenterFusion(
            tau=self.tau,
            learn_tau=self.learn_tau,
            mode=self.mode,
            weighting=self.weighting,
            iterations=self.iterations,
            name="appearance",
        )(maps, train)
        motion, mot_aux = TempletFusion(
            alpha_max=self.alpha_max,
            per_channel=self.per_channel,
            refine=self.refine,
            reduction=self.reduction,
            rescale=self.rescale,
            name="motion",
        )(maps, train)
        aux = dict(app_aux)
        aux["motion_weights"] = mot_aux["weights"]
        aux["motion_frame_weights"] = mot_aux["frame_weights"]
        return combine_branches(appearance, motion, self.combine), aux
