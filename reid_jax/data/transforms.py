"""JPEG decoding and clip-consistent augmentation of uint8 clips [T, H, W, 3], pure numpy.

Each random transform makes ONE random draw per clip and applies it identically to all T frames
(per-frame draws would destroy the temporal consistency that video re-ID models rely on). Every
transform in the lists returned by `train_transforms` / `test_transforms` has the signature
``fn(clip, rng)`` and is a module-level function or a `functools.partial` of one, so pipelines
stay picklable. Normalisation runs on device (uint8 transfer is 4x smaller than float32); its
constants live here, shared with weight importers.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

__all__ = [
    "DecodeError",
    "ERASE_FILL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "compose",
    "decode_jpeg",
    "normalize",
    "random_crop_pad",
    "random_erasing",
    "random_flip",
    "resize",
    "test_transforms",
    "train_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, 0..1 scale
IMAGENET_STD = (0.229, 0.224, 0.225)  # RGB, 0..1 scale
# The ImageNet mean pixel in uint8, (124, 116, 104): erased pixels normalise to ~0.
ERASE_FILL = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def normalize(x: Any, xp: Any = np) -> Any:
    """(x/255 - mean) / std in float32 with ImageNet constants; x is on the 0..255 scale [..., 3].

    `xp` is the array module: numpy (default) or jax.numpy for on-device normalisation.
    """
    x = xp.asarray(x, dtype=xp.float32)
    mean = xp.asarray([255.0 * m for m in IMAGENET_MEAN], dtype=xp.float32)
    inv_std = xp.asarray([1.0 / (255.0 * s) for s in IMAGENET_STD], dtype=xp.float32)
    return (x - mean) * inv_std


class DecodeError(ValueError):
    """An image could not be decoded; `name` says which file (or record) it was."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"cannot decode image {name!r}: {detail}")
        self.name = name
        self.detail = detail

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (DecodeError, (self.name, self.detail))


def decode_jpeg(data: bytes, name: str = "?") -> np.ndarray:
    """Decode JPEG bytes to HxWx3 uint8 RGB (simplejpeg, Pillow fallback for CMYK etc.).

    Raises DecodeError naming `name` when neither decoder can read the data.
    """
    try:
        image = simplejpeg.decode_jpeg(data, colorspace="RGB")
        if image.ndim == 3 and image.shape[2] == 3:
            return image
    except (ValueError, TypeError):
        pass  # e.g. CMYK JPEGs or non-JPEG data; let Pillow try
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise DecodeError(name, f"{type(err).__name__}: {err}") from err


def _check_clip(clip: np.ndarray) -> np.ndarray:
    clip = np.asarray(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"expected a clip of shape [T, H, W, 3], got shape {clip.shape}")
    return clip


def resize(clip: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (Pillow, antialiased) resize of every frame to height x width; no-op if equal."""
    clip = _check_clip(clip)
    if clip.shape[1:3] == (height, width):
        return clip
    if clip.dtype != np.uint8:
        raise ValueError(f"resize expects a uint8 clip, got dtype {clip.dtype}")
    out = np.empty((clip.shape[0], height, width, 3), dtype=np.uint8)
    for i, frame in enumerate(clip):
        out[i] = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    return out


def _resize_op(clip: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    del rng  # deterministic; signature matches the other transforms
    return resize(clip, height, width)


def random_crop_pad(clip: np.ndarray, rng: np.random.Generator, pad: int = 10) -> np.ndarray:
    """Zero-pad by `pad` then crop back to HxW at one random offset shared by all frames."""
    clip = _check_clip(clip)
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    dy, dx = (int(v) - pad for v in rng.integers(0, 2 * pad + 1, size=2))
    _, h, w, _ = clip.shape
    # Output pixel (r, c) = input pixel (r + dy, c + dx) where inside, else 0: no padded copy.
    r0, r1 = max(0, -dy), min(h, h - dy)
    c0, c1 = max(0, -dx), min(w, w - dx)
    out = np.zeros_like(clip)
    if r0 < r1 and c0 < c1:
        out[:, r0:r1, c0:c1] = clip[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx]
    return out


def random_flip(clip: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror every frame left-right with probability p (one draw per clip)."""
    clip = _check_clip(clip)
    if rng.random() < p:
        # Reverse whole 3-byte pixels (a void view): ~3x faster than copying clip[:, :, ::-1].
        pixels = np.ascontiguousarray(clip).view(np.dtype((np.void, 3 * clip.itemsize)))
        return np.ascontiguousarray(pixels[:, :, ::-1]).view(clip.dtype)
    return clip


def random_erasing(
    clip: np.ndarray,
    rng: np.random.Generator,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 3.33),
) -> np.ndarray:
    """Random Erasing (Zhong et al. 2020): with probability p fill one rectangle with ERASE_FILL.

    Area fraction ~ U(area), aspect ratio h/w ~ U(aspect) as in the paper, up to 100 tries to
    fit; the same rectangle is erased in every frame. The input is never modified.
    """
    clip = _check_clip(clip)
    if rng.random() >= p:
        return clip
    _, h, w, _ = clip.shape
    for _ in range(100):
        target = rng.uniform(*area) * h * w
        ratio = rng.uniform(*aspect)
        eh = int(round(np.sqrt(target * ratio)))
        ew = int(round(np.sqrt(target / ratio)))
        if 0 < eh < h and 0 < ew < w:
            y = int(rng.integers(0, h - eh + 1))
            x = int(rng.integers(0, w - ew + 1))
            out = clip.copy()
            out[:, y : y + eh, x : x + ew] = np.asarray(ERASE_FILL, dtype=clip.dtype)
            return out
    return clip


def _apply_all(fns: tuple[Transform, ...], clip: np.ndarray, rng: np.random.Generator) -> Any:
    for fn in fns:
        clip = fn(clip, rng)
    return clip


def compose(fns: Sequence[Transform]) -> Transform:
    """Apply fns(clip, rng) in order; returns a picklable partial."""
    return functools.partial(_apply_all, tuple(fns))


def train_transforms(
    height: int, width: int, pad: int = 10, flip_p: float = 0.5, erase_p: float = 0.5
) -> list[Transform]:
    """Training augmentation: resize, pad+random crop, random flip, random erasing."""
    return [
        functools.partial(_resize_op, height=height, width=width),
        functools.partial(random_crop_pad, pad=pad),
        functools.partial(random_flip, p=flip_p),
        functools.partial(random_erasing, p=erase_p),
    ]


def test_transforms(height: int, width: int) -> list[Transform]:
    """Evaluation preprocessing: resize only (normalisation happens on device)."""
    return [functools.partial(_resize_op, height=height, width=width)]


# Not a pytest test despite its name (it is collected when imported into a test module).
test_transforms.__test__ = False  # type: ignore[attr-defined]
