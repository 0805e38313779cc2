"""SynthMARS cameras, backgrounds, frame corruptions and the per-tracklet frame loop.

Third file of the generator (see synth_render.py for people, synth_mars.py for plan/IO/CLI).
Everything is a pure function of (seed, camera or tracklet index), so output does not depend
on which worker process renders what.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from reid_jax.data.synth_render import (
    SUPERSAMPLE,
    VIEWPOINTS,
    _Xf,
    draw_person,
    make_identity,
)

WALL_STYLES = ("bricks", "windows", "panels", "foliage", "plain")
GROUND_STYLES = ("tiles", "asphalt", "paving", "grass")
_BG_CACHE: dict[tuple, np.ndarray] = {}

# Difficulty presets: palette sizes (smaller = more shared attributes), per-identity colour
# jitter, camera cast/noise/blur strength, detector-box jitter and background clutter.
DIFFICULTY_PRESETS: dict[str, dict[str, float]] = {
    "easy": dict(upper_colors=16, lower_colors=9, hair_colors=6, skin_tones=6, shoe_colors=6,
                 bag_colors=6, upper_patterns=6, lower_patterns=3, color_jitter=10.0, cast=0.06,
                 noise_std=2.0, blur_max=0.4, box_jitter=0.02, clutter=0.3, light_var=0.04),
    "medium": dict(upper_colors=10, lower_colors=6, hair_colors=5, skin_tones=5, shoe_colors=4,
                   bag_colors=4, upper_patterns=6, lower_patterns=3, color_jitter=6.0, cast=0.12,
                   noise_std=4.0, blur_max=0.8, box_jitter=0.035, clutter=0.6, light_var=0.08),
    "hard": dict(upper_colors=6, lower_colors=4, hair_colors=3, skin_tones=4, shoe_colors=3,
                 bag_colors=3, upper_patterns=4, lower_patterns=2, color_jitter=3.0, cast=0.2,
                 noise_std=7.0, blur_max=1.3, box_jitter=0.05, clutter=1.0, light_var=0.12),
}  # fmt: skip
CORRUPTIONS = ("occlusion", "truncation", "blur", "switch")


def resolve_difficulty(difficulty: str | Mapping[str, float]) -> dict[str, float]:
    """Return the full difficulty dict: a preset name, or overrides applied on top of 'medium'."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTY_PRESETS:
            raise ValueError(
                f"difficulty must be one of {sorted(DIFFICULTY_PRESETS)}, got {difficulty!r}"
            )
        return dict(DIFFICULTY_PRESETS[difficulty])
    out = dict(DIFFICULTY_PRESETS["medium"])
    unknown = set(difficulty) - set(out)
    if unknown:
        raise ValueError(f"unknown difficulty keys {sorted(unknown)}; expected {sorted(out)}")
    out.update({k: float(v) for k, v in difficulty.items()})
    return out


def make_camera(seed: int, cam: int, diff: Mapping[str, float]) -> dict[str, Any]:
    """Per-camera look: colour cast, brightness, contrast, blur, noise and background style."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3, cam]))
    cast = diff["cast"]
    perm = np.random.default_rng(np.random.SeedSequence([seed, 5]))  # cameras differ in style
    walls, grounds = perm.permutation(len(WALL_STYLES)), perm.permutation(len(GROUND_STYLES))
    grey = rng.uniform(90, 170)
    return dict(
        cam=cam,
        gain=1.0 + rng.uniform(-cast, cast, 3),
        brightness=float(rng.uniform(0.8, 1.15)),
        contrast=float(rng.uniform(0.8, 1.1)),
        blur=float(rng.uniform(0.0, diff["blur_max"])),
        noise=float(diff["noise_std"] * rng.uniform(0.5, 1.5)),
        wall=WALL_STYLES[int(walls[(cam - 1) % len(walls)])],
        ground=GROUND_STYLES[int(grounds[(cam - 1) % len(grounds)])],
        wall_color=0.5 * rng.uniform(50, 220, 3) + 0.5 * grey,
        ground_color=0.6 * rng.uniform(50, 190, 3) + 0.4 * grey,
        horizon=float(rng.uniform(0.45, 0.68)),
    )


def _noise(rng: np.random.Generator, h: int, w: int, cell: int, amp: float) -> np.ndarray:
    small = rng.normal(0.0, 1.0, (max(2, h // cell), max(2, w // cell))).astype(np.float32)
    big = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(big)[..., None] * amp


def _textures(draw, rng, cam, hz: int, h: int, w: int) -> None:
    """Wall and ground line/shape textures of the camera's styles."""
    wc, gc = cam["wall_color"], cam["ground_color"]
    dark = lambda c, f: tuple(int(v * f) for v in c)  # noqa: E731
    if cam["wall"] == "bricks":
        bh = max(3, h // 22)
        for r, y in enumerate(range(0, hz, bh)):
            draw.line([(0, y), (w, y)], fill=dark(wc, 0.75), width=max(1, bh // 5))
            for x in range((r % 2) * bh, w, 2 * bh + bh // 2):
                draw.line([(x, y), (x, min(hz, y + bh))], fill=dark(wc, 0.75), width=1)
    elif cam["wall"] == "windows":
        ww = max(4, w // 12)
        for x in range(ww // 2, w, 2 * ww):
            for y in range(h // 20, hz - h // 10, h // 4):
                draw.rectangle([x, y, x + ww, y + h // 7], fill=dark(wc, 0.45))
    elif cam["wall"] == "panels":
        x = 0
        while x < w:
            pw = int(rng.uniform(0.15, 0.4) * w / 3)
            c = tuple(int(v) for v in rng.uniform(40, 220, 3))
            draw.rectangle([x, int(hz * 0.25), x + pw, hz], fill=c)
            draw.rectangle([x, int(hz * 0.1), x + pw, int(hz * 0.22)], fill=dark(c, 0.6))
            x += pw + int(rng.integers(1, 4))
    elif cam["wall"] == "foliage":
        for _ in range(40):
            x, y, r = rng.uniform(0, w), rng.uniform(0, hz), rng.uniform(0.05, 0.15) * h
            g = (int(rng.uniform(20, 70)), int(rng.uniform(70, 130)), int(rng.uniform(20, 60)))
            draw.ellipse([x - r, y - r, x + r, y + r], fill=g)
    if cam["ground"] == "tiles":
        y, step = hz, max(2.0, h * 0.04)
        while y < h:
            draw.line([(0, int(y)), (w, int(y))], fill=dark(gc, 0.7), width=1)
            y, step = y + step, step * 1.35
        for x in range(0, w, max(4, w // 20)):
            draw.line([(x, hz), (x, h)], fill=dark(gc, 0.7), width=1)
    elif cam["ground"] == "paving":
        bh = max(3, h // 30)
        for r, y in enumerate(range(hz, h, bh)):
            draw.line([(0, y), (w, y)], fill=dark(gc, 0.8), width=1)
            for x in range((r % 2) * bh, w, 2 * bh):
                draw.line([(x, y), (x, y + bh)], fill=dark(gc, 0.8), width=1)


def camera_background(seed: int, cam: int, diff: Mapping[str, float], h: int, w: int) -> np.ndarray:
    """Background strip (h x 3w x 3, uint8) of a camera; crops of it sit behind the person."""
    key = (seed, cam, h, w, tuple(sorted(diff.items())))
    if key in _BG_CACHE:
        return _BG_CACHE[key]
    c = make_camera(seed, cam, diff)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 4, cam]))
    wb, hz = 3 * w, int(c["horizon"] * h)
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    arr = np.empty((h, wb, 3), np.float32)
    arr[:hz] = c["wall_color"] * (1.0 - 0.18 * ys[:hz] / max(ys[hz - 1, 0, 0], 1e-3))
    arr[hz:] = c["ground_color"] * (0.85 + 0.25 * (ys[hz:] - ys[hz, 0, 0]))
    if c["ground"] == "grass":
        arr[hz:] = arr[hz:] * 0.4 + np.array([50, 110, 45], np.float32) * 0.6
    arr += _noise(rng, h, wb, max(2, h // 10), 10.0) + _noise(rng, h, wb, 1, 4.0)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    _textures(draw, rng, c, hz, h, wb)
    draw.line([(0, hz), (wb, hz)], fill=tuple(int(v * 0.6) for v in c["wall_color"]), width=2)
    for _ in range(int(round(diff["clutter"] * rng.uniform(3, 9)))):  # poles, bins, benches
        x, col = rng.uniform(0, wb), tuple(int(v) for v in rng.uniform(20, 200, 3))
        if rng.random() < 0.5:
            pw = rng.uniform(0.02, 0.06) * w
            draw.rectangle([x, 0, x + pw, hz + rng.uniform(0.05, 0.3) * h], fill=col)
        else:
            bw, bh = rng.uniform(0.2, 0.6) * w, rng.uniform(0.1, 0.25) * h
            draw.rectangle([x, hz - bh * 0.5, x + bw, hz + bh * 0.5], fill=col)
    out = np.array(img)
    out.setflags(write=False)
    _BG_CACHE[key] = out
    return out


def draw_occluder(
    img: Image.Image, rng: np.random.Generator, seed: int, diff: Mapping[str, float]
) -> None:
    """Cover part of the person: a pole, an object rising from the bottom, or a passer-by."""
    w, h = img.size
    kind = int(rng.integers(3))
    col = tuple(int(v) for v in rng.uniform(20, 220, 3))
    draw = ImageDraw.Draw(img)
    if kind == 0:
        x, pw = w * rng.uniform(0.2, 0.8), w * rng.uniform(0.15, 0.35)
        draw.rectangle([x - pw / 2, 0, x + pw / 2, h], fill=col)
    elif kind == 1:
        y = h * rng.uniform(0.5, 0.75)
        draw.rounded_rectangle([-w * 0.2, y, w * 1.2, h * 1.1], radius=h * 0.05, fill=col)
        draw.rectangle([w * 0.1, y + h * 0.05, w * 0.7, y + h * 0.12],
                       fill=tuple(int(v * 0.5) for v in col))  # fmt: skip
    else:
        other = make_identity(seed, 10_000_000 + int(rng.integers(1_000_000)), diff)
        view = VIEWPOINTS[int(rng.integers(3))]
        sgn = 1 if rng.random() < 0.5 else -1
        xf = _Xf(w / 2 + sgn * w * rng.uniform(0.3, 0.5), h * 0.02, h * rng.uniform(0.9, 1.0), sgn)
        draw_person(img, other, view, float(rng.random()), xf)


def _noise_bank() -> np.ndarray:
    """A fixed bank of N(0, 1) samples; frames take random slices (much faster than sampling)."""
    if "bank" not in _BG_CACHE:
        bank = np.random.default_rng(12345).standard_normal(1 << 21, dtype=np.float32)
        bank.setflags(write=False)
        _BG_CACHE["bank"] = bank
    return _BG_CACHE["bank"]


def postprocess(canvas: Image.Image, size: tuple[int, int], cam: Mapping[str, Any], light: float,
                rng: np.random.Generator, extra_blur: float) -> Image.Image:  # fmt: skip
    """Downsample the supersampled canvas to ``size`` (w, h) and apply the camera's optics
    (blur as a low-resolution sensor, upscaled), colour cast, brightness, contrast and noise."""
    w, h = size
    sigma = cam["blur"] * h / 128.0
    if sigma > 0.25:  # a lower-resolution camera: downscale, then upscale to the box size
        f = 1.0 + 0.8 * sigma
        small = canvas.resize((max(2, round(w / f)), max(2, round(h / f))), Image.Resampling.BOX)
        img = small.resize((w, h), Image.Resampling.BILINEAR)
    else:
        img = canvas.resize((w, h), Image.Resampling.BOX)
    if extra_blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(extra_blur))
    arr = np.asarray(img, dtype=np.float32)
    gain = (cam["gain"] * cam["brightness"] * light).astype(np.float32)
    con = np.float32(cam["contrast"])
    arr = arr * (gain * con) + gain * (np.float32(128.0) * (1 - con))
    bank = _noise_bank()
    if arr.size < bank.size:
        off = int(rng.integers(0, bank.size - arr.size))
        noise = bank[off : off + arr.size].reshape(arr.shape)
    else:  # frames larger than the bank: sample directly
        noise = rng.standard_normal(arr.shape, dtype=np.float32)
    arr += noise * np.float32(cam["noise"])
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def render_tracklet(job: Mapping[str, Any]) -> list[tuple[Image.Image, dict[str, Any]]]:
    """Render all frames of one tracklet; returns (image, sidecar metadata) per frame.

    ``job`` keys: seed, index (global tracklet index), diff, height, width, cam, kind
    ('identity' | 'distractor' | 'junk'), key (identity key), length, corruption_rate,
    switch_keys (identity keys a tracker switch may jump to).
    """
    seed, diff, kind = job["seed"], job["diff"], job["kind"]
    h, w, ss = job["height"], job["width"], SUPERSAMPLE
    hr, wr = h * ss, w * ss
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2, job["index"]]))
    cam = make_camera(seed, job["cam"], diff)
    bg = camera_background(seed, job["cam"], diff, hr, wr)
    ident = make_identity(seed, job["key"], diff)
    view = VIEWPOINTS[int(rng.integers(3))]
    mirror = 1 if rng.random() < 0.5 else -1
    step = 1.0 / (ident["period"] * rng.uniform(0.93, 1.07))
    phase0, light = rng.random(), 1.0 + rng.normal(0.0, diff["light_var"])
    ph0, jit = hr * rng.uniform(0.8, 0.9), diff["box_jitter"]
    top0, cx0 = (hr - ph0) * rng.uniform(0.3, 0.7), wr / 2.0
    bx = rng.uniform(0, 2 * wr)
    drift = mirror * ph0 * 0.04 if view == "side" else rng.normal(0.0, 0.01 * wr)
    junk = None
    if kind == "junk":  # background-only, or a badly cropped fragment of someone
        junk = "background" if rng.random() < 0.5 else "fragment"
        ph0 *= rng.uniform(1.8, 3.0) if rng.random() < 0.7 else rng.uniform(0.3, 0.5)
        cx0 += rng.uniform(-0.5, 0.5) * wr
        top0 = -rng.uniform(0.0, 0.8) * ph0 if ph0 > hr else rng.uniform(0.0, hr - ph0)
    frames = []
    keys = [k for k in job["switch_keys"] if k != job["key"]]
    for t in range(job["length"]):
        phase = (phase0 + t * step + rng.normal(0.0, 0.01)) % 1.0
        s = 1.0 + rng.normal(0.0, jit)
        ph, cx = ph0 * s, cx0 + rng.normal(0.0, jit) * wr
        top = top0 + rng.normal(0.0, jit * 0.5) * hr - (ph - ph0) * 0.5
        x0 = int(bx + t * drift) % (2 * wr)
        canvas = Image.fromarray(np.ascontiguousarray(bg[:, x0 : x0 + wr]))
        corr, other, extra_blur = "clean", "", 0.0
        if kind != "junk" and rng.random() < job["corruption_rate"]:
            corr = CORRUPTIONS[int(rng.integers(len(CORRUPTIONS)))]
        who, pview, pphase = ident, view, phase
        if corr == "switch":
            other = keys[int(rng.integers(len(keys)))] if keys else 20_000_000 + job["index"]
            who, pview = make_identity(seed, other, diff), VIEWPOINTS[int(rng.integers(3))]
            pphase = float(rng.random())
        elif corr == "truncation":
            mode = int(rng.integers(3))
            if mode == 0:  # box covers only the upper body
                ph, top = ph * rng.uniform(1.4, 1.9), top * 0.5
            elif mode == 1:  # box misses the head
                top = -rng.uniform(0.25, 0.45) * ph
            else:  # box cut at one side
                cx += (1 if rng.random() < 0.5 else -1) * rng.uniform(0.3, 0.45) * wr
        elif corr == "blur":
            extra_blur = rng.uniform(2.0, 3.5) * h / 128.0
        if junk != "background":
            draw_person(canvas, who, pview, pphase, _Xf(cx, top, ph, mirror))
        if corr == "occlusion":
            draw_occluder(canvas, rng, seed, diff)
        img = postprocess(canvas, (w, h), cam, light, rng, extra_blur)
        meta = dict(corruption=corr, gait_phase=f"{phase:.4f}" if junk != "background" else "",
                    viewpoint=view if junk != "background" else "", other_id=other,
                    junk=junk or "")  # fmt: skip
        frames.append((img, meta))
    return frames
