"""Pretrained ViT weights from timm or OpenAI CLIP / open_clip state dicts, for reid_jax's ViT.

Files are read by reid_jax.models.pretrained (``.safetensors`` with numpy, torch pickles with
``torch.load(weights_only=True)``); nothing is downloaded. Two key layouts, found under any prefix
(open_clip / OpenAI ``visual.``, CLIP-ReID ``image_encoder.``, ``module.``, ...); keys outside it
(e.g. the text tower) are ignored:

* timm ``vit_*_patch16_*``: ``patch_embed.proj``, ``cls_token`` [1,1,C], ``pos_embed`` [1,1+n,C],
  ``norm_pre``, ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``;
  ``head.*`` (the classifier) is dropped.
* CLIP: ``conv1``, ``class_embedding`` [C], ``positional_embedding`` [1+n,C], ``ln_pre``,
  ``transformer.resblocks.{i}.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``,
  ``ln_post``, ``proj`` [C,D] (loaded when the model has ``proj_dim`` = D, dropped otherwise).

Linear weights [out,in] become kernels [in,out], the patch conv OIHW -> HWIO. When the file's
position grid differs from the model's (another input size or patch stride), its grid part is
resized as timm's ``resample_abs_pos_embed`` / open_clip's ``resize_pos_embed`` do ("bicubic":
torch bicubic with antialias, their default) or as CLIP-ReID / TF-CLIP do ("bilinear": torch
bilinear, no antialias); the CLS row is kept. The file's grid is square unless ``src_grid`` says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from reid_jax.models import pretrained
from reid_jax.models.vit import ViT, grid_size, make_vit

LAYOUTS = ("timm", "clip")
INTERPOLATIONS = ("bicubic", "bilinear")
_DROPPED = {"timm": re.compile(r"^head\.(weight|bias)$"), "clip": re.compile(r"^proj$")}
# (flax module path after blocks_i is stripped, leaf) -> torch name, per layout.
_BLOCK_NAMES = {
    "timm": {
        "norm1": "norm1", "attn/qkv": "attn.qkv", "attn/proj": "attn.proj", "norm2": "norm2",
        "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2",
    },
    "clip": {
        "norm1": "ln_1", "attn/qkv": "attn.in_proj_", "attn/proj": "attn.out_proj", "norm2": "ln_2",
        "mlp/fc1": "mlp.c_fc", "mlp/fc2": "mlp.c_proj",
    },
}  # fmt: skip
_TOP_NAMES = {
    "timm": {"patch_embed": "patch_embed.proj", "norm_pre": "norm_pre", "norm": "norm"},
    "clip": {"patch_embed": "conv1", "norm_pre": "ln_pre", "norm": "ln_post"},
}
_LEAVES = {"kernel": "weight", "scale": "weight", "bias": "bias"}
# (layout, marker key, key that must sit beside it) identifying a ViT's prefix in a state dict.
_MARKERS = (
    ("timm", "patch_embed.proj.weight", "cls_token"),
    ("clip", "conv1.weight", "class_embedding"),
)


def detect_layout(names: Any) -> tuple[str, str]:
    """(layout, prefix) of the one ViT in a state dict's key set; ValueError if none or several."""
    names = set(names)
    found = sorted(
        (layout, k[: -len(marker)])
        for layout, marker, beside in _MARKERS
        for k in names
        if k.endswith(marker) and k[: -len(marker)] + beside in names
    )
    if not found:
        sample = sorted(names)[:5]
        raise ValueError(
            "no ViT found: expected timm keys (patch_embed.proj.weight + cls_token) or CLIP keys "
            f"(conv1.weight + class_embedding) under some prefix; the file has e.g. {sample}"
        )
    if len(found) > 1:
        raise ValueError(f"the file holds several ViTs (layout, prefix): {found}; pass prefix=")
    return found[0]


def torch_name(path: tuple[str, ...], layout: str) -> str:
    """Source key of a flax param path, e.g. ('blocks_3','attn','qkv','kernel') ->
    'blocks.3.attn.qkv.weight' (timm) or 'transformer.resblocks.3.attn.in_proj_weight' (clip)."""
    *modules, leaf = path
    if modules == [] and leaf in ("cls_token", "pos_embed"):
        return {"timm": leaf, "clip": {"cls_token": "class_embedding",
                "pos_embed": "positional_embedding"}[leaf]}[layout]  # fmt: skip
    if modules == ["proj"] and leaf == "kernel":
        if layout == "clip":
            return "proj"
        raise ValueError("timm layout has no visual projection: use proj_dim=0 with timm weights")
    if leaf not in _LEAVES:
        raise ValueError(f"param {'/'.join(path)} has no {layout} counterpart")
    if (m := re.fullmatch(r"blocks_(\d+)", modules[0])) is not None:
        inner = _BLOCK_NAMES[layout]["/".join(modules[1:])]
        block = f"blocks.{m[1]}" if layout == "timm" else f"transformer.resblocks.{m[1]}"
        if inner.endswith("_"):  # torch MultiheadAttention: in_proj_weight / in_proj_bias
            return f"{block}.{inner}{_LEAVES[leaf]}"
        return f"{block}.{inner}.{_LEAVES[leaf]}"
    return f"{_TOP_NAMES[layout]['/'.join(modules)]}.{_LEAVES[leaf]}"


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The source tensor's shape for a flax param of ``shape``."""
    leaf = path[-1]
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
    if leaf == "kernel" and path[-2:] == ("proj", "kernel") and len(path) == 2:
        return shape  # CLIP's proj is used as x @ proj: already [in, out]
    if leaf == "kernel":
        return (shape[1], shape[0])
    if leaf in ("cls_token", "pos_embed") and layout == "timm":
        return (1, 1, *shape) if leaf == "cls_token" else (1, *shape)
    return shape


def interp_matrix(size_in: int, size_out: int, method: str) -> np.ndarray:
    """[size_out, size_in] weights of torch F.interpolate along one axis (align_corners=False):
    "bicubic" with antialias=True (Keys a=-0.5, support widened when shrinking, rows normalised;
    aten UpSampleKernel.cpp _compute_indices_weights_aa) or "bilinear" without antialias."""
    scale = size_in / size_out
    out = np.zeros((size_out, size_in), np.float64)
    if method == "bilinear":
        for i in range(size_out):
            src = max(scale * (i + 0.5) - 0.5, 0.0)
            i0 = int(src)
            i1 = min(i0 + 1, size_in - 1)
            frac = src - i0
            out[i, i0] += 1.0 - frac
            out[i, i1] += frac
        return out
    if method != "bicubic":
        raise ValueError(f"position-embedding interpolation {method!r}; expected {INTERPOLATIONS}")

    def cubic(x: float, a: float = -0.5) -> float:
        x = abs(x)
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        if x < 2.0:
            return (((x - 5.0) * x + 8.0) * x - 4.0) * a
        return 0.0

    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    for i in range(size_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), size_in)
        w = np.array([cubic((j - center + 0.5) * invscale) for j in range(lo, hi)])
        out[i, lo:hi] = w / w.sum()
    return out


def resize_pos_embed(
    pos: np.ndarray, src_grid: tuple[int, int], dst_grid: tuple[int, int], method: str = "bicubic"
) -> np.ndarray:
    """[1 + sh*sw, C] position embeddings -> [1 + dh*dw, C]: CLS row kept, grid interpolated."""
    (sh, sw), (dh, dw) = src_grid, dst_grid
    if pos.shape[0] != 1 + sh * sw:
        raise ValueError(f"position embeddings have {pos.shape[0]} rows, not 1 + {sh}x{sw}")
    grid = pos[1:].astype(np.float64).reshape(sh, sw, -1)
    grid = np.einsum(
        "ah,bw,hwc->abc", interp_matrix(sh, dh, method), interp_matrix(sw, dw, method), grid
    )
    return np.concatenate([pos[:1], grid.reshape(dh * dw, -1).astype(pos.dtype)])


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    expected: Mapping[str, Any],
    grid: tuple[int, int],
    *,
    prefix: str | None = None,
    src_grid: tuple[int, int] | None = None,
    interpolation: str = "bicubic",
    source: str = "state dict",
) -> dict[str, Any]:
    """Map a timm / CLIP ViT state dict onto ``expected`` (the ViT's params shape tree) whose
    patch grid is ``grid`` (h, w).

    Returns the nested numpy float32 params; raises one ValueError listing every missing,
    unexpected, mis-shaped or non-float key. ``prefix`` is auto-detected when None.
    """
    layout, found_prefix = detect_layout(state_dict)
    prefix = found_prefix if prefix is None else prefix
    inside = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if len(inside) < len(state_dict):
        logging.info(
            "%s: ignoring %d keys outside %r", source, len(state_dict) - len(inside), prefix
        )
    flat_expected = traverse_util.flatten_dict(dict(expected))
    problems, flat, wanted = [], {}, {}
    for path in flat_expected:
        try:
            wanted[torch_name(path, layout)] = path
        except ValueError as e:
            problems.append(f"missing    {'/'.join(path)}: {e}")
    for name, path in sorted(wanted.items()):
        want = tuple(flat_expected[path].shape)
        want_torch = _torch_shape(path, want, layout)
        if name not in inside:
            problems.append(f"missing    {prefix}{name} {list(want_torch)}")
            continue
        arr = np.asarray(inside[name])
        if not np.issubdtype(arr.dtype, np.floating):
            problems.append(f"dtype      {prefix}{name}: file {arr.dtype}, expected floating point")
            continue
        regrid = arr.size != np.prod(want) or (src_grid and tuple(src_grid) != tuple(grid))
        if path == ("pos_embed",) and arr.shape[-1:] == want[-1:] and regrid:
            rows = arr.reshape(-1, want[-1])
            problem = _grid_problem(rows.shape[0] - 1, src_grid, want[0] - 1, grid)
            if problem:
                problems.append(f"shape      {prefix}{name}: file {list(arr.shape)}, {problem}")
                continue
            src = src_grid or (int(round((rows.shape[0] - 1) ** 0.5)),) * 2
            logging.info("%s: position grid %s -> %s (%s)", source, src, grid, interpolation)
            arr = resize_pos_embed(rows, tuple(src), tuple(grid), interpolation)
            arr = arr.reshape(want_torch)
        if arr.shape != want_torch:
            problems.append(
                f"shape      {prefix}{name}: file {list(arr.shape)}, model {list(want_torch)}"
            )
            continue
        flat[path] = np.ascontiguousarray(_to_flax(path, arr, want), np.float32)
    for name in sorted(set(inside) - set(wanted)):
        if not _DROPPED[layout].search(name):
            problems.append(f"unexpected {prefix}{name} {list(np.shape(inside[name]))}")
    if problems:
        raise ValueError(_mismatch_message(source, layout, problems, inside))
    return traverse_util.unflatten_dict(flat)


def _grid_problem(
    n_file: int, src_grid: tuple[int, int] | None, n_model: int, grid: tuple[int, int]
) -> str:
    """Why a file's n_file grid rows cannot be resized to the model's grid, or ""."""
    if grid[0] * grid[1] != n_model:
        return f"model grid {tuple(grid)} does not hold its {n_model} position rows"
    if src_grid is None:
        side = int(round(n_file**0.5))
        if side * side != n_file:
            return f"{n_file} grid rows are not a square grid: set the file's grid (src_grid)"
    elif src_grid[0] * src_grid[1] != n_file:
        return f"{n_file} grid rows do not fill src_grid={tuple(src_grid)}"
    return ""


def _to_flax(path: tuple[str, ...], arr: np.ndarray, want: tuple[int, ...]) -> np.ndarray:
    """Source tensor -> flax layout (conv OIHW -> HWIO, Linear [out,in] -> [in,out])."""
    if path[-1] == "kernel" and arr.ndim == 4:
        return arr.transpose(2, 3, 1, 0)
    if path[-1] == "kernel" and path != ("proj", "kernel"):
        return arr.T
    return arr.reshape(want)


def _mismatch_message(source: str, layout: str, problems: list[str], names: Any) -> str:
    """One error text: every difference, then a hint on which arch the file fits."""
    hint = ""
    if layout == "clip":
        hint = "\nThe file is an OpenAI CLIP / open_clip visual tower: use arch clip_vit_b16"
        hint += " (act gelu for open_clip's LAION weights)."
    elif "norm_pre.weight" in names:
        hint = "\nThe file is a timm CLIP ViT (norm_pre, no patch bias): use arch clip_vit_b16."
    else:
        hint = "\nThe file is a timm ViT: use arch vit_b16 / vit_s16 with its width and depth."
    return (
        f"{source} does not match the ViT backbone: {len(problems)} differences\n  "
        + "\n  ".join(problems)
        + hint
    )


def load_params(
    path: str | Path,
    expected: Mapping[str, Any],
    grid: tuple[int, int],
    *,
    prefix: str | None = None,
    src_grid: tuple[int, int] | None = None,
    interpolation: str = "bicubic",
) -> dict[str, Any]:
    """ViT params as host numpy from a ``.safetensors`` / torch file, matched to ``expected``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"pretrained weights {path} is a directory: ViT weights are read from .safetensors or "
            "torch files (orbax import_weights directories hold ResNets)"
        )
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    return convert_state_dict(
        pretrained.read_state_dict(path), expected, grid, prefix=prefix, src_grid=src_grid,
        interpolation=interpolation, source=str(path),
    )  # fmt: skip


def model_grid(module: ViT, image_size: tuple[int, int]) -> tuple[int, int]:
    """The patch grid the ViT makes of ``image_size`` (H, W) inputs."""
    return grid_size(*image_size, module.patch, module.stride or module.patch)


def abstract_params(module: ViT, image_size: tuple[int, int]) -> dict[str, Any]:
    """Shapes/dtypes (no memory) of the ViT's params for ``image_size`` inputs."""
    x = jax.ShapeDtypeStruct((1, *image_size, 3), jnp.float32)
    return jax.eval_shape(lambda k, x: module.init(k, x), jax.random.key(0), x)["params"]


def load_backbone(
    path: str | Path,
    arch: str,
    image_size: tuple[int, int],
    *,
    prefix: str | None = None,
    src_grid: tuple[int, int] | None = None,
    interpolation: str = "bicubic",
    **vit_kwargs: Any,
) -> tuple[ViT, dict[str, Any]]:
    """(module, {"params": ...}) such that ``module.apply(variables, x)`` maps normalised NHWC
    images of ``image_size`` to (CLS, patch tokens) with the file's weights."""
    module = make_vit(arch, **vit_kwargs)
    params = load_params(
        path, abstract_params(module, image_size), model_grid(module, image_size),
        prefix=prefix, src_grid=src_grid, interpolation=interpolation,
    )  # fmt: skip
    return module, {"params": jax.tree.map(jnp.asarray, params)}
