"""ImageNet-pretrained ResNet weights from torchvision/timm state dicts, for the Linen ResNet.

Sources: a ``.safetensors`` file (read into numpy by the safetensors package, torch not needed),
a torch pickle (``.pth``/``.pt``/``.bin``/``.ckpt``/``.pth.tar``, read with
``torch.load(weights_only=True)`` when torch is installed), or an orbax checkpoint directory
written by ``python -m reid_jax.tools.import_weights``. Wrapped checkpoints ({"state_dict": ...} or
{"model": ...}, as timm/Lightning training scripts write) are unwrapped.
The key rule is in reid_jax.models.resnet's docstring. Supported layouts: torchvision
resnet18/34/50/101 and timm's plain ResNets (same names, e.g. ``resnet50.a1_in1k``), under any
key prefix (``module.``, ``model.``, ...); the ``fc`` classifier and ``num_batches_tracked`` are
dropped. timm's deep-stem / avg-down variants (resnet50c/d/s), SE blocks or other extra layers are
rejected with every unexpected key listed. Both layouts are ResNet v1.5 (stride on the 3x3 conv);
the weights expect inputs normalised by reid_jax.data.transforms.normalize (IMAGENET_MEAN/STD).

Inflated video ResNets (reid_jax.models.inflated, docs/models.md) load the same 2-D files, as
guxinqian/AP3D ``models/ResNet.py`` inflates its ImageNet ResNet-50: a 3x3x3 ("i3d") kernel gets
the 2-D kernel at its centre frame and zeros elsewhere (``I3D``); the layers with no 2-D
counterpart (``*_temporal`` residuals, ``*_nonlocal`` blocks) are not read and keep their init
(zero temporal kernels, zero-scale non-local BatchNorm), so the loaded network computes the 2-D
ResNet's function. ``load_variables`` returns only the variables the file provides.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import safetensors
import safetensors.numpy
from flax import traverse_util

from reid_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid_jax.models.resnet import RESNETS, ResNet, make_resnet

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")  # .tar: timm's *.pth.tar
ORBAX_FORMAT = "reid_jax.pretrained_backbone/1"  # custom_metadata["format"] of import_weights dirs

# Flax variable path pieces -> torchvision names.
_MODULE_TO_TORCH = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_LAYER = re.compile(r"^layer(\d+)_(\d+)$")
_ADDED = re.compile(r"(_temporal|_nonlocal)$")  # inflated-ResNet modules with no 2-D weights
_DROPPED = re.compile(r"(^|\.)num_batches_tracked$|^fc\.(weight|bias)$")


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors`` file as numpy (``safetensors.numpy``; BF16, which numpy
    reads through ml_dtypes, widened to float32). One-line errors name the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"safetensors file {path} does not exist")
    try:
        tensors = safetensors.numpy.load_file(path)
    except safetensors.SafetensorError as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    return {
        k: v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v for k, v in tensors.items()
    }


def write_safetensors(
    path: str | Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Write numpy arrays as a ``.safetensors`` file (``safetensors.numpy.save_file``, made
    contiguous first: it writes a strided array's memory as is); used by tests and benchmarks."""
    arrays = {k: np.asarray(v, order="C") for k, v in tensors.items()}
    safetensors.numpy.save_file(arrays, str(path), dict(metadata) if metadata else None)


def read_torch(path: str | Path) -> dict[str, np.ndarray]:
    """Read a torch-pickled state dict with ``weights_only=True`` (needs torch) into numpy."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"torch checkpoint {path} does not exist")
    try:
        import torch  # noqa: PLC0415 (optional dependency)
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs torch (pip install torch; the CPU build suffices), "
            "or convert the file to .safetensors, which is read without torch"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path}: torch.load(weights_only=True) refused it (not a plain state dict: "
            f"{str(e).splitlines()[0]}). If you trust the file, extract the weights once: "
            "torch.save(torch.load(p, weights_only=False)['state_dict'], 'weights.pth')"
        ) from e
    for key in ("state_dict", "model"):  # training checkpoints wrap the state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, expected a state dict")
    return {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).numpy()
        for k, v in obj.items()
        if isinstance(v, torch.Tensor)
    }


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a state dict from ``.safetensors`` (numpy only) or a torch pickle (by suffix)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    if path.suffix in TORCH_SUFFIXES:
        return read_torch(path)
    raise ValueError(
        f"pretrained weights {path}: unknown suffix {path.suffix!r}; expected .safetensors, "
        f"one of {TORCH_SUFFIXES} or an orbax directory written by reid_jax.tools.import_weights"
    )


def torch_name(path: tuple[str, ...]) -> str:
    """torchvision key of a flax variable path: ('params','layer1_0','conv1','kernel') ->
    'layer1.0.conv1.weight'."""
    collection, *modules, leaf = path
    if (collection, leaf) not in _LEAF_TO_TORCH:
        raise ValueError(f"variable {'/'.join(path)} has no torchvision counterpart")
    parts = []
    for m in modules:
        match = _LAYER.match(m)
        parts.append(f"layer{match[1]}.{match[2]}" if match else _MODULE_TO_TORCH.get(m, m))
    return ".".join([*parts, _LEAF_TO_TORCH[(collection, leaf)]])


def detect_prefix(names: Any) -> str:
    """The key prefix ('' / 'module.' / 'model.backbone.' ...) in front of a ResNet's keys."""
    names = set(names)
    stem = "conv1.weight"
    found = sorted(
        k[: -len(stem)]
        for k in names
        if k.endswith(stem) and k[: -len(stem)] + "layer1.0.conv1.weight" in names
    )
    if len(found) > 1:
        raise ValueError(f"the file holds several ResNets, under prefixes {found}; pass prefix=")
    return found[0] if found else ""


def guess_arch(names: Any) -> str | None:
    """The registered arch whose block counts and block type match these torchvision keys."""
    blocks = tuple(
        len({m[1] for n in names if (m := re.match(rf"layer{i}\.(\d+)\.", n))}) for i in range(1, 5)
    )
    block = "bottleneck" if any(re.match(r"layer\d+\.\d+\.conv3\.", n) for n in names) else "basic"
    for arch, factory in RESNETS.items():
        if (factory.keywords["stage_sizes"], factory.keywords["block"]) == (blocks, block):
            return arch
    return None


def is_added(path: tuple[str, ...]) -> bool:
    """Whether a variable path belongs to a temporal / non-local layer (not in 2-D files)."""
    return any(_ADDED.search(part) for part in path)


def _base(expected: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """The flat {path: shape} of ``expected`` that a 2-D ResNet file provides."""
    flat = traverse_util.flatten_dict(dict(expected))
    added = [p for p in flat if is_added(p)]
    if added:
        logging.info("%d temporal/non-local tensors keep their init (no 2-D weights)", len(added))
    return {p: v for p, v in flat.items() if not is_added(p)}


def _inflate(kernel: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A 2-D HWIO kernel placed at the centre frame of a [t, kh, kw, I, O] zero kernel (other
    shapes are returned as they are, for the shape check to report)."""
    if len(shape) != kernel.ndim + 1 or tuple(kernel.shape) != tuple(shape[1:]):
        return kernel
    out = np.zeros(shape, kernel.dtype)
    out[shape[0] // 2] = kernel
    return out


def convert_state_dict(
    state_dict: Mapping[str, np.ndarray],
    expected: Mapping[str, Any],
    *,
    prefix: str | None = None,
    source: str = "state dict",
) -> dict[str, Any]:
    """Map a torchvision/timm state dict onto ``expected`` ({params, batch_stats} shapes).

    Returns nested numpy float32 trees; raises one ValueError listing every missing, unexpected,
    mis-shaped or non-float key. Keys outside ``prefix`` (auto-detected when None) are ignored.
    """
    prefix = detect_prefix(state_dict) if prefix is None else prefix
    inside = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if len(inside) < len(state_dict):
        outside = sorted(k for k in state_dict if not k.startswith(prefix))
        logging.info(
            "%s: ignoring %d keys outside %r, e.g. %s", source, len(outside), prefix, outside[:3]
        )
    flat_expected = _base(expected)
    wanted = {torch_name(p): p for p in flat_expected}
    problems, flat = [], {}
    for name, path in sorted(wanted.items()):
        want = tuple(flat_expected[path].shape)
        want_torch = (want[-1], want[-2], want[-4], want[-3]) if path[-1] == "kernel" else want
        if name not in inside:
            problems.append(f"missing    {prefix}{name} {list(want_torch)}")
            continue
        arr = np.asarray(inside[name])
        if arr.shape != want_torch:
            problems.append(
                f"shape      {prefix}{name}: file {list(arr.shape)}, model {list(want_torch)}"
            )
        elif not np.issubdtype(arr.dtype, np.floating):
            problems.append(f"dtype      {prefix}{name}: file {arr.dtype}, expected floating point")
        else:
            arr = arr.transpose(2, 3, 1, 0) if path[-1] == "kernel" else arr  # OIHW -> HWIO
            arr = _inflate(arr, want)
            flat[path] = np.ascontiguousarray(arr, dtype=flat_expected[path].dtype)
    for name in sorted(set(inside) - set(wanted)):
        if not _DROPPED.search(name):
            problems.append(f"unexpected {prefix}{name} {list(np.shape(inside[name]))}")
    if problems:
        raise ValueError(_mismatch_message(source, problems, inside))
    return traverse_util.unflatten_dict(flat)


def _mismatch_message(source: str, problems: list[str], names: Any) -> str:
    """One error text: every difference, then a hint on what the file seems to hold."""
    hint = ""
    if "conv1.0.weight" in names:
        hint = "\nThe file has a deep stem (timm resnet*c/d/s): only plain ResNets are supported."
    elif (arch := guess_arch(names)) and "conv1.weight" in names:
        hint = f"\nThe file looks like {arch} (width {np.shape(names['conv1.weight'])[0]})."
    return (
        f"{source} does not match the backbone: {len(problems)} differences\n  "
        + "\n  ".join(problems)
        + hint
    )


def save_orbax(
    directory: str | Path, variables: Mapping[str, Any], *, arch: str, width: int, source: str,
    force: bool = False,
) -> Path:  # fmt: skip
    """Write backbone {params, batch_stats} as an orbax checkpoint with import metadata."""
    directory = Path(directory).absolute()
    meta = {
        "format": ORBAX_FORMAT, "arch": arch, "width": int(width), "source": str(source),
        "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
    }  # fmt: skip
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory, dict(variables), custom_metadata=meta, force=force)
        ckptr.wait_until_finished()
    return directory


def read_orbax(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read an import_weights directory into numpy: (variables, metadata)."""
    directory = Path(directory).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        try:
            step_meta = ckptr.metadata(directory)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"{directory} is not an orbax checkpoint: {e}") from e
        meta = dict(step_meta.custom_metadata or {})
        if meta.get("format") != ORBAX_FORMAT:
            raise ValueError(
                f"{directory}: custom_metadata format {meta.get('format')!r}, expected "
                f"{ORBAX_FORMAT!r} (write it with python -m reid_jax.tools.import_weights)"
            )
        norm = (tuple(meta.get("mean", ())), tuple(meta.get("std", ())))
        if norm != (IMAGENET_MEAN, IMAGENET_STD):
            raise ValueError(
                f"{directory}: weights expect input mean/std {norm}, but the input pipeline "
                f"normalises with {(IMAGENET_MEAN, IMAGENET_STD)}"
            )
        tree = step_meta.item_metadata.tree
        target = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), tree)
        return ckptr.restore(directory, target), meta


def _match_tree(
    tree: Mapping[str, Any], expected: Mapping[str, Any], source: str
) -> dict[str, Any]:
    """Check an already-flax-layout tree against ``expected``; one error listing differences."""
    flat = traverse_util.flatten_dict(dict(tree))
    base = _base(expected)
    want = {p: tuple(v.shape) for p, v in base.items()}
    flat = {p: _inflate(np.asarray(v), want[p]) if p in want else v for p, v in flat.items()}
    problems = []
    for p in sorted(set(flat) | set(want)):
        name, have = "/".join(p), list(np.shape(flat[p])) if p in flat else None
        if p not in flat:
            problems.append(f"missing    {name} {list(want[p])}")
        elif p not in want:
            problems.append(f"unexpected {name} {have}")
        elif tuple(have) != want[p]:
            problems.append(f"shape      {name}: file {have}, model {list(want[p])}")
    if problems:
        raise ValueError(_mismatch_message(source, problems, {}))
    return traverse_util.unflatten_dict(
        {p: np.asarray(v, dtype=base[p].dtype) for p, v in flat.items()}
    )


def load_variables(
    path: str | Path, expected: Mapping[str, Any], *, prefix: str | None = None
) -> dict[str, Any]:
    """Backbone {params, batch_stats} as host numpy from any supported source.

    ``expected`` is the {params, batch_stats} shape tree the result must match exactly, less the
    temporal / non-local layers of an inflated ResNet (``is_added``), which the result omits.
    """
    path = Path(path)
    if path.is_dir():
        tree, meta = read_orbax(path)
        return _match_tree(tree, expected, f"{path} ({meta['arch']}, width {meta['width']})")
    if not path.exists():
        raise FileNotFoundError(f"pretrained weights {path} do not exist")
    return convert_state_dict(read_state_dict(path), expected, prefix=prefix, source=str(path))


def abstract_variables(module: nn.Module) -> dict[str, Any]:
    """Shapes/dtypes (no memory) of a backbone's params and batch_stats: what a file must hold."""
    x = jax.ShapeDtypeStruct((1, 64, 32, 3), jnp.float32)
    return jax.eval_shape(lambda k, x: module.init(k, x, train=False), jax.random.key(0), x)


def load_backbone(
    path: str | Path,
    arch: str = "resnet50",
    last_stride: int = 2,
    *,
    width: int = 64,
    dtype: Any = jnp.float32,
    prefix: str | None = None,
) -> tuple[ResNet, dict[str, Any]]:
    """(module, variables) such that ``module.apply(variables, x, train=False)`` maps normalised
    NHWC float32 images to the last feature map [N, h, w, C], with the file's ImageNet weights."""
    module = make_resnet(arch, width=width, last_stride=last_stride, dtype=dtype)
    variables = load_variables(path, abstract_variables(module), prefix=prefix)
    return module, jax.tree.map(jnp.asarray, variables)
