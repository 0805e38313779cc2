"""Appearance-preserving 3D convolution (AP3D) and the plain temporal convolutions beside it.

Gu et al., "Appearance-Preserving 3D Convolution for Video-based Person Re-identification",
ECCV 2020. Reproduces guxinqian/AP3D ``models/AP3D.py`` (commit 84bd12a): ``APM`` (feature-map
registration of each frame's neighbours by a cosine-similarity softmax, gated by contrastive
attention), ``APP3DC`` (the authors' default AP3D: the 2-D 3x3 conv, then a zero-initialised
3x1x1 temporal conv over the APM output added as a residual) and its non-AP counterpart
``P3DC`` (kind "c3d": the same residual 3x1x1 conv on the raw maps), plus ``I3D`` (kind "i3d":
the 3x3 conv inflated to 3x3x3, 2-D kernel at the centre frame).

Every module here works on frames [B*T, h, w, C] (the ResNet's layout) and takes ``seq_len`` T
to see clips; at init each one returns exactly what the 2-D ResNet returns (zero temporal
kernels, or only the centre frame non-zero), so an ImageNet ResNet-50 is unchanged at step 0.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch's default Conv3d init (kaiming_uniform, a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
TORCH_DEFAULT_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# torchvision/AP3D conv init for the ResNet's own convs (kaiming normal, fan_out).
CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

TEMPORAL_KINDS = ("none", "c3d", "i3d", "ap3d")


def to_clips(x: jax.Array, seq_len: int) -> jax.Array:
    """[B*T, h, w, C] -> [B, T, h, w, C]; ValueError when B*T is not a multiple of T."""
    if seq_len < 1 or x.shape[0] % seq_len:
        raise ValueError(f"{x.shape[0]} frames do not split into clips of seq_len={seq_len}")
    return x.reshape((x.shape[0] // seq_len, seq_len, *x.shape[1:]))


def _pad_time(x: jax.Array, half: int) -> jax.Array:
    """Zero-pad axis 1 (T) by ``half`` on each side (AP3D's ConstantPad3d)."""
    return jnp.pad(x, ((0, 0), (half, half)) + ((0, 0),) * (x.ndim - 2))


def _dense(features: int, dtype: Any, name: str) -> nn.Dense:
    """A bias-free 1x1x1 conv (channels-last Dense) with torch's default init."""
    return nn.Dense(
        features, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
        kernel_init=TORCH_DEFAULT_INIT, name=name,
    )  # fmt: skip


class APM(nn.Module):
    """Appearance-preserving module: clips [B,T,h,w,C] -> [B, T*time_dim, h, w, C].

    For frame t, each neighbour t+d (|d| <= time_dim//2, zero outside the clip) is registered
    to t: every position of t takes the softmax(temperature * cosine)-weighted average of the
    neighbour's positions, cosines taken on a C/16 ``semantic_mapping`` of the maps. With
    ``contrastive_att`` the registered neighbour is scaled by sigmoid(w . (x_map(x) * n_map(n)))
    computed on gradient-stopped inputs (the reference ``.detach()``s them). The output
    interleaves [neighbours before t, x_t, neighbours after t] per frame, ready for a
    (time_dim,1,1) conv of stride time_dim. ``models/AP3D.py`` class APM.
    """

    reduction: int = 16
    time_dim: int = 3
    temperature: float = 4.0
    contrastive_att: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Register each frame's neighbours onto it and interleave them with the frame."""
        b, t, h, w, c = x.shape
        n, half = self.time_dim, (self.time_dim - 1) // 2
        inner = c // self.reduction
        semantic = _dense(inner, self.dtype, "semantic_mapping")(x).astype(jnp.float32)
        norm = jnp.linalg.norm(semantic, axis=-1, keepdims=True)
        semantic = semantic / jnp.maximum(norm, 1e-12)  # F.normalize(p=2, dim=1)
        offsets = [i for i in range(n) if i != n // 2]  # neighbour t+i-half in the padded clip
        pad_sem, pad_x = _pad_time(semantic, half), _pad_time(x, half)
        nb_sem = jnp.stack([pad_sem[:, i : i + t] for i in offsets], axis=2)
        nb_x = jnp.stack([pad_x[:, i : i + t] for i in offsets], axis=2)  # [B,T,N-1,h,w,C]
        query = semantic.reshape(b, t, h * w, inner)
        keys = nb_sem.reshape(b, t, n - 1, h * w, inner)
        sim = jnp.einsum("btqc,btjkc->btjqk", query, keys) * self.temperature
        sim = jax.nn.softmax(sim, axis=-1)
        values = nb_x.reshape(b, t, n - 1, h * w, c).astype(jnp.float32)
        registered = jnp.einsum("btjqk,btjkc->btjqc", sim, values).reshape(b, t, n - 1, h, w, c)
        registered = registered.astype(self.dtype)
        if self.contrastive_att:
            x_att = _dense(inner, self.dtype, "x_mapping")(jax.lax.stop_gradient(x))
            n_att = _dense(inner, self.dtype, "n_mapping")(jax.lax.stop_gradient(registered))
            att = _dense(1, self.dtype, "contrastive_att")(x_att[:, :, None] * n_att)
            registered = registered * nn.sigmoid(att)
        x = jnp.asarray(x, self.dtype)[:, :, None]
        out = jnp.concatenate([registered[:, :, :half], x, registered[:, :, half:]], axis=2)
        return out.reshape(b, t * n, h, w, c)


class TemporalResidual(nn.Module):
    """out + temporal(out) on frames [B*T,h,w,C]: kind "c3d" (P3D-C) or "ap3d" (AP-P3D-C).

    "c3d": a (time_dim,1,1) conv with zero temporal padding over the clip (``P3DC``).
    "ap3d": the same conv, stride time_dim, over the APM output (``APP3DC``). Both kernels start
    at zero (the reference ``nn.init.constant_(..., 0)``), so the residual is 0 at init.
    """

    kind: str
    time_dim: int = 3
    temperature: float = 4.0
    contrastive_att: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, seq_len: int) -> jax.Array:
        """Add the temporal residual to the 2-D conv's output ``x`` [B*T,h,w,C]."""
        if self.kind not in ("c3d", "ap3d"):
            raise ValueError(f"TemporalResidual kind={self.kind!r}; expected 'c3d' or 'ap3d'")
        if self.time_dim < 3 or self.time_dim % 2 == 0:
            raise ValueError(f"temporal time_dim={self.time_dim}; expected an odd number >= 3")
        clips = to_clips(x, seq_len)
        c, half = x.shape[-1], (self.time_dim - 1) // 2
        if self.kind == "ap3d":
            clips = APM(
                time_dim=self.time_dim, temperature=self.temperature,
                contrastive_att=self.contrastive_att, dtype=self.dtype, name="apm",
            )(clips)  # fmt: skip
            stride, padding = self.time_dim, ((0, 0), (0, 0), (0, 0))
        else:
            stride, padding = 1, ((half, half), (0, 0), (0, 0))
        residual = nn.Conv(
            c, (self.time_dim, 1, 1), strides=(stride, 1, 1), padding=padding, use_bias=False,
            dtype=self.dtype, param_dtype=jnp.float32, kernel_init=nn.initializers.zeros,
            name="temporal_conv",
        )(clips)  # fmt: skip
        return x + residual.reshape(x.shape).astype(x.dtype)


def centre_init(time_dim: int) -> Any:
    """Kernel init [time_dim, kh, kw, I, O]: a fan-out normal 2-D kernel at the centre frame,
    zeros elsewhere (AP3D ``I3D``: the 2-D weight at ``middle_idx``, other frames 0)."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        kernel2d = CONV_INIT(key, shape[1:], dtype)
        return jnp.zeros(shape, dtype).at[time_dim // 2].set(kernel2d)

    return init


class InflatedConv(nn.Module):
    """I3D conv on frames [B*T,h,w,C]: kernel (time_dim, k, k), temporal zero padding
    time_dim//2, spatial stride/padding of the 2-D conv it replaces (``models/AP3D.py`` I3D)."""

    features: int
    kernel: int = 3
    stride: int = 1
    time_dim: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, seq_len: int) -> jax.Array:
        """Convolve each clip over (T, h, w); returns frames [B*T, h', w', features]."""
        t_pad, s_pad = self.time_dim // 2, self.kernel // 2
        kernel = self.param(
            "kernel",
            centre_init(self.time_dim),
            (self.time_dim, self.kernel, self.kernel, x.shape[-1], self.features),
            jnp.float32,
        )
        clips = jnp.asarray(to_clips(x, seq_len), self.dtype)
        out = jax.lax.conv_general_dilated(
            clips,
            jnp.asarray(kernel, self.dtype),
            window_strides=(1, self.stride, self.stride),
            padding=((t_pad, t_pad), (s_pad, s_pad), (s_pad, s_pad)),
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        )
        return out.reshape((x.shape[0], *out.shape[2:]))
