"""Export of a loaded run's embedding function to ONNX (jax2onnx) and StableHLO (``jax.export``),
each checked on the spot against the JAX model on a random batch.

Two variants, both with a dynamic batch dimension N:
- clips: uint8 [N, T, H, W, 3] RGB frames already at config.data.height x width -> [N, D];
- image (``image=True``, the convention trackers' ReID back-ends load): float32 [N, 3, H, W]
  (NCHW) RGB normalised with the ImageNet mean / std -> [N, D] (output 0).
The feature is the evaluation's (config.evals ``feature``; flip TTA when configured).

ONNX: jax2onnx's Flax-Linen plugins (conv, pooling, ...) do not convert these models (shape
stamping of the residual adds, and ``nn.max_pool``'s explicit padding), so the function is
first traced to a jaxpr of lax primitives and replayed inside jax2onnx (``_replay``); the ResNet's
3x3 max pool (a rank-4 ``reduce_window_max``, which ONNX MaxPool takes only up to 3 spatial
dims) is replayed as a 3-D pool over [N*C, H, W].
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from reid_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from reid_jax.evaluation import evaluators
from reid_jax.models import embed as embed_lib

OPSET = 21
TOLERANCE = 1e-4  # max |exported - jax| / max |jax| accepted by the on-the-spot check


def embed_fn(embedder: Any, image: bool = False) -> Any:
    """The embedding as a function of one array (clips uint8 [N,T,H,W,3], or with ``image``
    normalised float32 [N,3,H,W]) -> [N, D] float32, the weights closed over."""
    cfg = embedder.evaluator.cfg
    step = evaluators._flip_embed if cfg.flip else embed_lib.embed_step
    fn = functools.partial(step, model=embedder.model, feature=cfg.feature)
    state = embedder.state

    def clips_fn(clips: jax.Array) -> jax.Array:
        return fn(state, {"clip": clips})["features"]

    if not image:
        return clips_fn

    def image_fn(images: jax.Array) -> jax.Array:
        # Back to the 0..255 scale embed_step normalises from: one preprocessing code path.
        mean = jnp.asarray([255.0 * m for m in IMAGENET_MEAN], jnp.float32)
        std = jnp.asarray([255.0 * s for s in IMAGENET_STD], jnp.float32)
        frames = jnp.transpose(images, (0, 2, 3, 1)) * std + mean
        return clips_fn(frames[:, None])

    return image_fn


def input_spec(embedder: Any, image: bool, seq_len: int) -> jax.ShapeDtypeStruct:
    """The input's shape with a symbolic batch dimension ``N``."""
    (n,) = jax.export.symbolic_shape("N")
    h, w = embedder.size
    if image:
        return jax.ShapeDtypeStruct((n, 3, h, w), jnp.float32)
    return jax.ShapeDtypeStruct((n, seq_len, h, w, 3), jnp.uint8)


def sample_input(embedder: Any, image: bool, seq_len: int, n: int = 3, seed: int = 0) -> tuple:
    """(random uint8 frames [n, T, H, W, 3], the exported model's input made from them)."""
    h, w = embedder.size
    t = 1 if image else seq_len
    frames = np.random.default_rng(seed).integers(0, 256, (n, t, h, w, 3), dtype=np.uint8)
    if image:
        return frames, np.transpose(np.asarray(normalize(frames[:, 0])), (0, 3, 1, 2))
    return frames, frames


def describe(embedder: Any, image: bool, seq_len: int) -> dict[str, str]:
    """What the exported model takes and gives (ONNX metadata_props, printed by the CLI)."""
    h, w = embedder.size
    if image:
        takes = (
            f"float32 [N, 3, {h}, {w}] (NCHW, dynamic N): RGB images scaled to 0..1 then "
            f"normalised with ImageNet mean {IMAGENET_MEAN} and std {IMAGENET_STD}"
        )
    else:
        takes = f"uint8 [N, {seq_len}, {h}, {w}, 3] (dynamic N): RGB clips of {seq_len} frames"
    cfg = embedder.evaluator.cfg
    return {
        "input": takes,
        "output": f"output 0: float32 [N, D] re-ID feature ({cfg.feature}); rank with the "
        f"{cfg.distance} distance",
        "reid_jax.workdir": str(embedder.workdir),
        "reid_jax.step": str(embedder.step),
        "reid_jax.fusion": str(embedder.config.model.fusion),
    }


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|."""
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-12))


def _check(name: str, diff: float) -> None:
    if not diff <= TOLERANCE:
        raise RuntimeError(
            f"{name} export differs from the JAX model: max relative difference {diff:.3g} > "
            f"{TOLERANCE:g}"
        )


def to_stablehlo(embedder: Any, path: str | Path, image: bool = False, seq_len: int = 0) -> float:
    """Writes the serialized ``jax.export`` artifact to ``path`` (and its MLIR text beside it,
    ``.mlir``), reloads it with ``jax.export.deserialize`` and returns the max relative
    difference to the JAX embedder on a random batch (RuntimeError above TOLERANCE)."""
    seq_len = seq_len or embedder.seq_len
    fn = embed_fn(embedder, image)
    exported = jax.export.export(jax.jit(fn))(input_spec(embedder, image, seq_len))
    path = Path(path)
    path.write_bytes(exported.serialize())
    path.with_suffix(".mlir").write_text(exported.mlir_module())
    frames, x = sample_input(embedder, image, seq_len)
    reloaded = jax.export.deserialize(bytearray(path.read_bytes()))
    diff = relative_difference(np.asarray(reloaded.call(x)), embedder.embed_clips(frames))
    _check("StableHLO", diff)
    return diff


def _max_pool(x: jax.Array, **p: Any) -> jax.Array:
    """NHWC ``reduce_window_max`` with window (1, kh, kw, 1) as a 3-D one over [N*C, H, W]."""
    win, strides, pad = p["window_dimensions"], p["window_strides"], p["padding"]
    if x.ndim != 4 or win[0] != 1 or win[3] != 1 or strides[0] != 1 or strides[3] != 1:
        return lax.reduce_window_max_p.bind(x, **p)
    n, h, w, c = x.shape
    y = jnp.transpose(x, (0, 3, 1, 2)).reshape((n * c, h, w))
    y = lax.reduce_window_max_p.bind(
        y, window_dimensions=(1, *win[1:3]), window_strides=(1, *strides[1:3]),
        padding=((0, 0), *pad[1:3]), base_dilation=(1, 1, 1), window_dilation=(1, 1, 1),
    )  # fmt: skip
    return jnp.transpose(y.reshape((n, c, *y.shape[1:])), (0, 2, 3, 1))


def _pad(x: jax.Array, value: jax.Array, *, padding_config: Any) -> jax.Array:
    """``lax.pad`` without interior padding as concatenations of constant blocks (jax2onnx's pad
    cannot stamp a symbolic batch dimension on its output); other cases bind ``lax.pad``."""
    if any(i != 0 or lo < 0 or hi < 0 or max(lo, hi) > x.shape[a] for a, (lo, hi, i) in
           enumerate(padding_config) if lo or hi or i):  # fmt: skip
        return lax.pad(x, value, padding_config)
    for axis, (lo, hi, _) in enumerate(padding_config):
        parts = [lax.full_like(lax.slice_in_dim(x, 0, lo, axis=axis), value)] if lo else []
        parts.append(x)
        if hi:
            parts.append(lax.full_like(lax.slice_in_dim(x, 0, hi, axis=axis), value))
        x = lax.concatenate(parts, axis) if len(parts) > 1 else x
    return x


_NESTED = {"pjit": "jaxpr", "jit": "jaxpr", "custom_jvp_call": "call_jaxpr",
           "custom_vjp_call": "call_jaxpr"}  # fmt: skip


def _replay(jaxpr: Any, consts: list[Any], *args: Any) -> list[Any]:
    """Evaluates a jaxpr primitive by primitive (nested jits and custom derivatives inlined):
    what jax2onnx traces is then lax primitives only, none of the Linen / jnp calls it patches."""
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jcore.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        args_in = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _NESTED:
            inner = eqn.params[_NESTED[name]]
            outs = _replay(inner.jaxpr, inner.consts, *args_in)
        elif name == "reduce_window_max":
            outs = [_max_pool(*args_in, **eqn.params)]
        elif name == "pad":
            outs = [_pad(*args_in, **eqn.params)]
        else:
            outs = eqn.primitive.bind(*args_in, **eqn.params)
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def to_onnx(embedder: Any, path: str | Path, image: bool = False, seq_len: int = 0) -> float:
    """Writes the ONNX model (opset ``OPSET``, dynamic batch, ``describe`` in metadata_props) to
    ``path``, runs it with onnxruntime and returns the max relative difference to the JAX
    embedder on a random batch (RuntimeError above TOLERANCE). Needs the ``export`` extra."""
    try:
        import onnx  # noqa: PLC0415 (optional: the export extra)
        import onnxruntime  # noqa: PLC0415
        from jax2onnx import to_onnx as convert  # noqa: PLC0415
    except ImportError as e:
        raise ImportError(
            f"ONNX export needs jax2onnx, onnx and onnxruntime ({e}): pip install -e "
            "'.[export]' && pip install --no-deps jax2onnx==0.17.1 (see docs/inference.md)"
        ) from e
    # jax2onnx imports all its plugins and warns, with a traceback, about each whose library
    # (equinox, dm_pix) is absent: plugins these models never use; onnx_ir notes shape values.
    for name in ("jax2onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    seq_len = seq_len or embedder.seq_len
    spec = input_spec(embedder, image, seq_len)
    closed = jax.make_jaxpr(embed_fn(embedder, image))(spec)

    def replayed(x: jax.Array) -> jax.Array:
        return _replay(closed.jaxpr, closed.consts, x)[0]

    model = convert(
        replayed, [spec], model_name="reid_jax", opset=OPSET,
        input_names=["images" if image else "clips"], output_names=["features"],
    )  # fmt: skip
    onnx.helper.set_model_props(model, describe(embedder, image, seq_len))
    path = Path(path)
    onnx.save(model, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames, x = sample_input(embedder, image, seq_len)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    diff = relative_difference(got, embedder.embed_clips(frames))
    _check("ONNX", diff)
    return diff
