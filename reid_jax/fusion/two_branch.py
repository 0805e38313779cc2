"""``two_branch``: appearance from ``cosine_center`` (what the frames share), motion from
``templet`` (what varies between them), concatenated or summed: the note's "appearance from the
invariant features, motion semantics from the varying ones".
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.fusion.cosine import CosineCenterFusion
from reid_jax.fusion.ops import Options, branch, check_choice, make_branch
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

    Options: ``combine`` and each branch's own options as a dict, ``appearance`` (those of
    CosineCenterFusion) and ``motion`` (TempletFusion), e.g. ``appearance={"tau": 0.1}``; unset
    ones keep the branch's defaults. Parameters: the sum of the branches'. aux: the appearance
    branch's "weights" (and "frame_weights"), the motion branch's as "motion_weights" /
    "motion_frame_weights".
    """

    combine: str = "concat"
    appearance: Options = branch(CosineCenterFusion)
    motion: Options = branch(TempletFusion)

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict]:
        """Fuse [B,T,h,w,C] maps into [B,2C] (concat) or [B,C] (sum)."""
        check_choice("combine", self.combine, COMBINES)
        appearance, app_aux = make_branch(self, "appearance")(maps, train)
        motion, mot_aux = make_branch(self, "motion")(maps, train)
        aux = dict(app_aux)
        aux["motion_weights"] = mot_aux["weights"]
        aux["motion_frame_weights"] = mot_aux["frame_weights"]
        return combine_branches(appearance, motion, self.combine), aux
