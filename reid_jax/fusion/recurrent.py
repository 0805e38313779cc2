"""``lstm``: an LSTM over the frames' GAP features, outputs averaged over time (the RNN baseline
of Gao & Nevatia 2018 / McLaughlin et al. 2016). Output dim D = hidden.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from reid_jax.fusion.ops import uniform_weights
from reid_jax.fusion.pooling import check_frames, spatial_average


def lstm(
    frames: jax.Array, kernel_in: jax.Array, kernel_rec: jax.Array, bias: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Run an LSTM over frames [B,T,C] and average its outputs -> ([B,H] float32, aux).

    ``kernel_in`` [C,4H], ``kernel_rec`` [H,4H], ``bias`` [4H]; gate order input, forget, cell,
    output; zero initial state. aux["weights"] is the uniform 1/T of the output average.
    """
    frames = check_frames(frames)
    b, t = frames.shape[:2]
    hidden = kernel_rec.shape[0]
    inputs = jnp.einsum("btc,cg->tbg", frames, kernel_in) + bias  # [T,B,4H], time-major

    def cell(carry: tuple[jax.Array, jax.Array], x: jax.Array):
        h, c = carry
        gates = x + h @ kernel_rec
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((b, hidden), jnp.float32)
    _, outputs = jax.lax.scan(cell, (zeros, zeros), inputs)
    return jnp.mean(outputs, axis=0), {"weights": uniform_weights(b, t)}


class LSTMFusion(nn.Module):
    """LSTM fusion; parameters 4 H (C + H + 1) for C input channels and ``hidden`` = H.

    Init: input kernel LeCun normal, recurrent kernel orthogonal, bias 0 except forget gate 1.
    """

    hidden: int = 512

    @nn.compact
    def __call__(self, maps: jax.Array, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Fuse [B,T,h,w,C] maps (GAP first) into [B,hidden]."""
        del train
        if self.hidden < 1:
            raise ValueError(f"fusion option hidden={self.hidden}; expected a positive integer")
        frames = spatial_average(maps)
        c, h = frames.shape[-1], self.hidden

        def forget_one(key: jax.Array, shape: tuple) -> jax.Array:
            del key
            return jnp.zeros(shape, jnp.float32).at[h : 2 * h].set(1.0)

        kernel_in = self.param("kernel_in", nn.initializers.lecun_normal(), (c, 4 * h))
        kernel_rec = self.param("kernel_rec", nn.initializers.orthogonal(), (h, 4 * h))
        bias = self.param("bias", forget_one, (4 * h,))
        return lstm(frames, kernel_in, kernel_rec, bias)
