"""Pillow/numpy renderer of SynthMARS pedestrians (identity attributes, body, clothes, gait).

Split for length: synth_render.py (people), synth_scene.py (cameras, backgrounds, corruptions,
the per-tracklet frame loop), synth_mars.py (split plan, file IO, CLI).
Person geometry is in person units: x = 0 on the body axis, y = 0 at the top of the head,
y = 1 at the soles; ``_Xf`` maps it to pixels of the (supersampled) canvas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

Color = tuple[int, int, int]

UPPER_COLORS: tuple[Color, ...] = (
    (232, 232, 226), (28, 28, 32), (125, 126, 130), (32, 46, 92), (178, 32, 38),
    (58, 108, 188), (122, 168, 212), (42, 110, 62), (218, 188, 44), (226, 118, 42),
    (214, 120, 160), (108, 60, 140), (110, 76, 46), (198, 180, 140), (108, 30, 46),
    (100, 110, 60),
)  # fmt: skip
LOWER_COLORS: tuple[Color, ...] = (
    (34, 34, 40), (48, 68, 118), (118, 118, 124), (168, 150, 110), (88, 64, 44),
    (72, 100, 150), (220, 220, 214), (50, 70, 50), (138, 40, 40),
)  # fmt: skip
SKIN_TONES: tuple[Color, ...] = (
    (240, 206, 182), (222, 178, 148), (198, 148, 114), (160, 112, 80), (116, 80, 56),
    (232, 192, 160),
)  # fmt: skip
HAIR_COLORS: tuple[Color, ...] = (
    (24, 20, 20), (70, 46, 30), (122, 82, 46), (200, 170, 112), (168, 168, 168), (140, 62, 30),
)  # fmt: skip
SHOE_COLORS: tuple[Color, ...] = (
    (26, 26, 26), (228, 228, 228), (100, 70, 46), (110, 110, 116), (170, 40, 40), (50, 70, 140),
)  # fmt: skip
BAG_COLORS: tuple[Color, ...] = (
    (30, 30, 30), (90, 90, 96), (40, 50, 92), (110, 76, 50), (160, 40, 40), (50, 90, 60),
)  # fmt: skip
UPPER_PATTERNS = ("plain", "hstripes", "logo", "checks", "open", "vstripes")
LOWER_PATTERNS = ("plain", "side_stripe", "checks")
HAIR_STYLES = ("short", "long", "ponytail", "cap", "bald")
LOWER_TYPES = ("trousers", "trousers", "trousers", "shorts", "skirt")
BAGS = ("none", "none", "backpack", "shoulder")
VIEWPOINTS = ("front", "back", "side")

SUPERSAMPLE = 2  # draw at 2x and downsample: cheap anti-aliasing.


def _pick(rng: np.random.Generator, palette: tuple, size: float, jitter: float) -> Color:
    base = np.array(palette[int(rng.integers(max(1, min(int(size), len(palette)))))], float)
    return tuple(int(v) for v in np.clip(base + rng.normal(0.0, jitter, 3), 0, 255))


def make_identity(seed: int, key: int, diff: Mapping[str, float]) -> dict[str, Any]:
    """Persistent appearance and gait of identity ``key``, drawn from small shared palettes."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1, key]))
    j = diff["color_jitter"]
    upper = _pick(rng, UPPER_COLORS, diff["upper_colors"], j)
    upper2 = _pick(rng, UPPER_COLORS, diff["upper_colors"], j)
    if max(abs(a - b) for a, b in zip(upper, upper2)) < 40:  # make the 2nd colour visible
        upper2 = tuple(int(255 - v) if sum(upper) < 380 else int(v * 0.35) for v in upper)
    lower = _pick(rng, LOWER_COLORS, diff["lower_colors"], j)
    lower2 = _pick(rng, UPPER_COLORS, diff["upper_colors"], j)
    return dict(
        key=key,
        width=float(rng.uniform(0.88, 1.15)),
        head=float(rng.uniform(0.93, 1.08)),
        skin=_pick(rng, SKIN_TONES, diff["skin_tones"], j * 0.5),
        hair=_pick(rng, HAIR_COLORS, diff["hair_colors"], j * 0.5),
        hair_style=HAIR_STYLES[int(rng.integers(len(HAIR_STYLES)))],
        cap=_pick(rng, BAG_COLORS + UPPER_COLORS[:4], 10, j),
        upper=upper,
        upper2=upper2,
        upper_pattern=UPPER_PATTERNS[int(rng.integers(int(diff["upper_patterns"])))],
        sleeves="long" if rng.random() < 0.6 else "short",
        lower=lower,
        lower2=lower2,
        lower_type=LOWER_TYPES[int(rng.integers(len(LOWER_TYPES)))],
        lower_pattern=LOWER_PATTERNS[int(rng.integers(int(diff["lower_patterns"])))],
        shoes=_pick(rng, SHOE_COLORS, diff["shoe_colors"], j * 0.5),
        bag=BAGS[int(rng.integers(len(BAGS)))],
        bag_color=_pick(rng, BAG_COLORS, diff["bag_colors"], j),
        bag_side=int(rng.choice([-1, 1])),
        period=float(rng.uniform(9.0, 14.0)),
        stride=float(rng.uniform(0.36, 0.52)),
        arm_swing=float(rng.uniform(0.5, 1.0)),
    )


def _clip_box(poly, x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, float]]:
    """Sutherland-Hodgman clip of a polygon to the box [x0, x1] x [y0, y1]."""
    for axis, val, keep_ge in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        out, n = [], len(poly)
        for i in range(n):
            p, q = poly[i], poly[(i + 1) % n]
            pin = p[axis] >= val if keep_ge else p[axis] <= val
            qin = q[axis] >= val if keep_ge else q[axis] <= val
            if pin:
                out.append(p)
            if pin != qin:
                t = (val - p[axis]) / (q[axis] - p[axis])
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        poly = out
        if not poly:
            break
    return poly


class _Xf:
    """Person units -> canvas pixels: scale ``ph``, body axis at ``cx``, head top at ``top``."""

    def __init__(self, cx: float, top: float, ph: float, mirror: int = 1):
        self.cx, self.top, self.ph, self.m = cx, top, ph, mirror

    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.m * x * self.ph, self.top + y * self.ph)

    def pts(self, seq) -> list[tuple[float, float]]:
        return [self.p(x, y) for x, y in seq]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (a, b), (c, d) = self.p(x0, y0), self.p(x1, y1)
        return [min(a, c), min(b, d), max(a, c), max(b, d)]


def _shade(c: Color, f: float) -> Color:
    return tuple(int(min(255, v * f)) for v in c)


def _limb(draw: ImageDraw.ImageDraw, p, q, wp: float, wq: float, color: Color) -> list:
    """A tapered segment p->q (pixel widths wp, wq) with round ends; returns its quad."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    n = math.hypot(dx, dy) or 1e-6
    nx, ny = -dy / n, dx / n
    ap, aq = (nx * wp / 2, ny * wp / 2), (nx * wq / 2, ny * wq / 2)
    quad = [(p[0] + ap[0], p[1] + ap[1]), (q[0] + aq[0], q[1] + aq[1]),
            (q[0] - aq[0], q[1] - aq[1]), (p[0] - ap[0], p[1] - ap[1])]  # fmt: skip
    draw.polygon(quad, fill=color)
    for c, w in ((p, wp), (q, wq)):
        draw.ellipse([c[0] - w / 2, c[1] - w / 2, c[0] + w / 2, c[1] + w / 2], fill=color)
    return quad


def _pattern(draw, poly, pattern: str, c2: Color, xf: _Xf, period: float = 0.06) -> None:
    """Overlay stripes/checks of colour c2 on a (convex) pixel polygon, anchored to the body."""
    if pattern not in ("hstripes", "vstripes", "checks") or len(poly) < 3:
        return
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    step = period * xf.ph
    half = step / 2
    y0 = xf.top + math.floor((min(ys) - xf.top) / step) * step
    x0 = xf.cx + math.floor((min(xs) - xf.cx) / step) * step
    if pattern == "hstripes":
        y = y0
        while y < max(ys):
            cell = _clip_box(poly, -1e9, 1e9, y, y + half)
            if len(cell) >= 3:
                draw.polygon(cell, fill=c2)
            y += step
    elif pattern == "vstripes":
        x = x0
        while x < max(xs):
            cell = _clip_box(poly, x, x + half * 0.8, -1e9, 1e9)
            if len(cell) >= 3:
                draw.polygon(cell, fill=c2)
            x += step
    else:  # plaid: thin bands in both directions
        y = y0
        while y < max(ys):
            cell = _clip_box(poly, -1e9, 1e9, y, y + half * 0.6)
            if len(cell) >= 3:
                draw.polygon(cell, fill=c2)
            y += step
        x = x0
        while x < max(xs):
            cell = _clip_box(poly, x, x + half * 0.6, -1e9, 1e9)
            if len(cell) >= 3:
                draw.polygon(cell, fill=c2)
            x += step


def skeleton(ident: Mapping[str, Any], view: str, phase: float) -> dict[str, Any]:
    """Joint positions (person units) for a gait phase in [0, 1); side view faces +x."""
    th, bw = 2 * math.pi * phase, ident["width"]
    lt, ls, lu, lf = 0.245, 0.225, 0.16, 0.15
    hip_y, sh_y = 0.52, 0.175
    legs, arms = [], []
    if view == "side":
        amp = ident["stride"]
        for i in range(2):
            ti = th + i * math.pi
            a, k = amp * math.sin(ti), 0.12 + 0.75 * max(0.0, math.cos(ti)) * amp / 0.45
            knee = (lt * math.sin(a), hip_y + lt * math.cos(a))
            ank = (knee[0] + ls * math.sin(a - k), knee[1] + ls * math.cos(a - k))
            legs.append([(0.0, hip_y), knee, ank])
            b = -0.8 * amp * ident["arm_swing"] * math.sin(ti)
            elb = (0.01 + lu * math.sin(b), sh_y + lu * math.cos(b))
            fa = b + 0.2 + 0.9 * max(0.0, b)
            hand = (elb[0] + lf * math.sin(fa), elb[1] + lf * math.cos(fa))
            arms.append([(0.01, sh_y), elb, hand])
        dy = hip_y + lt + ls - max(leg[2][1] for leg in legs)
        dx = 0.0
    else:
        hw, sw = 0.07 * bw, 0.118 * bw
        for i, sgn in enumerate((-1, 1)):
            lift = max(0.0, math.sin(th + i * math.pi))
            legs.append([(sgn * hw * 0.75, hip_y),
                         (sgn * hw * (0.8 + 0.3 * lift), hip_y + lt * (1 - 0.08 * lift)),
                         (sgn * hw * 0.78, hip_y + (lt + ls) * (1 - 0.16 * lift))])  # fmt: skip
            s = math.sin(th + i * math.pi + math.pi) * ident["arm_swing"]
            elb = (sgn * (sw + 0.012), sh_y + lu * (1 - 0.08 * abs(s)))
            arms.append([(sgn * sw, sh_y + 0.01), elb,
                         (sgn * (sw + 0.006), elb[1] + lf * (1 - 0.4 * max(0.0, s)))])  # fmt: skip
        dy, dx = -0.008 * math.cos(2 * th), 0.006 * math.sin(th)
    mv = lambda pts: [(x + dx, y + dy) for x, y in pts]  # noqa: E731
    return dict(legs=[mv(lg) for lg in legs], arms=[mv(a) for a in arms], dx=dx, dy=dy)


def _draw_leg(draw, xf: _Xf, ident, leg, shade: float, view: str) -> None:
    s = ident["width"] * xf.ph
    lower, skin = _shade(ident["lower"], shade), _shade(ident["skin"], shade)
    (h, k, a), ltype = [xf.p(*q) for q in leg], ident["lower_type"]
    leg_c = lower if ltype == "trousers" else skin
    q1 = _limb(draw, h, k, 0.075 * s, 0.052 * s, leg_c)
    q2 = _limb(draw, k, a, 0.052 * s, 0.04 * s, leg_c)
    if ltype == "shorts":
        mid = (h[0] * 0.3 + k[0] * 0.7, h[1] * 0.3 + k[1] * 0.7)
        _limb(draw, h, mid, 0.08 * s, 0.064 * s, lower)
    if ltype == "trousers":
        pat, c2 = ident["lower_pattern"], _shade(ident["lower2"], shade)
        if pat == "checks":
            _pattern(draw, q1, "checks", _shade(ident["lower"], shade * 0.7), xf, 0.05)
            _pattern(draw, q2, "checks", _shade(ident["lower"], shade * 0.7), xf, 0.05)
        elif pat == "side_stripe":
            _limb(draw, h, k, 0.012 * s, 0.012 * s, c2)
            _limb(draw, k, a, 0.012 * s, 0.012 * s, c2)
    shoe = _shade(ident["shoes"], shade)
    if view == "side":
        draw.polygon(xf.pts([(leg[2][0] - 0.025, leg[2][1] - 0.012), (leg[2][0] + 0.055,
                     leg[2][1] + 0.005), (leg[2][0] + 0.06, leg[2][1] + 0.03),
                     (leg[2][0] - 0.03, leg[2][1] + 0.03)]), fill=shoe)  # fmt: skip
    else:
        x, y = leg[2]
        draw.ellipse(xf.box(x - 0.03, y - 0.012, x + 0.03, y + 0.03), fill=shoe)


def _draw_arm(draw, xf: _Xf, ident, arm, shade: float) -> None:
    s = ident["width"] * xf.ph
    sh, el, ha = [xf.p(*q) for q in arm]
    up, skin = _shade(ident["upper"], shade), _shade(ident["skin"], shade)
    if ident["sleeves"] == "long":
        _limb(draw, sh, el, 0.05 * s, 0.042 * s, up)
        _limb(draw, el, ha, 0.042 * s, 0.034 * s, up)
    else:
        _limb(draw, el, ha, 0.034 * s, 0.03 * s, skin)
        mid = (sh[0] * 0.45 + el[0] * 0.55, sh[1] * 0.45 + el[1] * 0.55)
        _limb(draw, sh, el, 0.04 * s, 0.034 * s, skin)
        _limb(draw, sh, mid, 0.052 * s, 0.046 * s, up)
    r = 0.022 * s
    draw.ellipse([ha[0] - r, ha[1] - r, ha[0] + r, ha[1] + r], fill=skin)


def _torso_poly(ident, view: str, dx: float, dy: float) -> list[tuple[float, float]]:
    bw = ident["width"]
    if view == "side":
        pts = [(-0.055, 0.165), (0.045, 0.165), (0.07, 0.25), (0.055, 0.44), (0.065, 0.54),
               (-0.065, 0.54), (-0.055, 0.44), (-0.07, 0.26)]  # fmt: skip
        pts = [(x * (0.6 + 0.4 * bw), y) for x, y in pts]
    else:
        sw, ww, hw = 0.118 * bw, 0.096 * bw, 0.092 * bw
        pts = [(-sw, 0.165), (sw, 0.165), (sw * 0.98, 0.25), (ww, 0.44), (hw, 0.545),
               (-hw, 0.545), (-ww, 0.44), (-sw * 0.98, 0.25)]  # fmt: skip
    return [(x + dx, y + dy) for x, y in pts]


def _draw_head(draw, xf: _Xf, ident, view: str, dx: float, dy: float, back_layer: bool) -> None:
    """Head, face and hair; ``back_layer`` draws only long hair that hangs behind the body."""
    cx, cy = dx, 0.07 + dy
    rx, ry = 0.047 * ident["head"], 0.066 * ident["head"]
    hair, skin, style = ident["hair"], ident["skin"], ident["hair_style"]

    def ell(a: float, b: float, c: float, d: float, col: Color) -> None:  # head-relative box
        draw.ellipse(xf.box(cx + a * rx, cy + b * ry, cx + c * rx, cy + d * ry), fill=col)

    def quad(a: float, b: float, c: float, d: float, y_end: float) -> None:  # hanging hair
        y1 = y_end + dy
        pts = [(cx + a * rx, cy), (cx + b * rx, cy), (cx + c * rx, y1), (cx + d * rx, y1)]
        draw.polygon(xf.pts(pts), fill=hair)

    if back_layer:
        if style == "long" and view == "front":
            quad(-1.15, 1.15, 1.3, -1.3, 0.24)
        return
    draw.rectangle(xf.box(cx - 0.022, cy + ry * 0.6, cx + 0.022, 0.185 + dy), fill=skin)
    if view == "front":
        if style in ("short", "long", "ponytail"):
            ell(-1.1, -1.1, 1.1, 0.5, hair)
            ell(-0.92, -0.62, 0.92, 1.0, skin)
        else:
            ell(-1.0, -1.0, 1.0, 1.0, skin)
    elif view == "back":
        ell(-1.0, -1.0, 1.0, 1.0, skin if style == "bald" else hair)
        if style == "long":
            quad(-1.1, 1.1, 1.2, -1.2, 0.27)
        elif style == "ponytail":
            tail = xf.box(cx - rx * 0.35, cy + ry * 0.4, cx + rx * 0.35, 0.23 + dy)
            draw.ellipse(tail, fill=hair)
    else:
        ell(-1.05, -1.0, 1.05, 1.0, skin)
        if style not in ("bald", "cap"):
            ell(-1.12, -1.08, 0.55, 0.45, hair)
        if style == "long":
            quad(-1.1, -0.1, -0.3, -1.25, 0.25)
        elif style == "ponytail":
            ell(-1.6, -0.1, -0.8, 0.9, hair)
    if style == "cap":
        box = xf.box(cx - rx * 1.1, cy - ry * 1.15, cx + rx * 1.1, cy + ry * 0.4)
        draw.chord(box, 180, 360, fill=ident["cap"])
        if view != "back":
            x0 = cx - rx * (0.2 if view == "side" else 0.9)
            x1 = cx + rx * (1.6 if view == "side" else 0.9)
            y0, y1 = cy - ry * 0.3, cy - ry * 0.15
            brim = [(x0, y0), (x1, y0), (x1, y1), (cx, y1)]
            draw.polygon(xf.pts(brim), fill=_shade(ident["cap"], 0.75))


def _draw_bag(draw, xf: _Xf, ident, view: str, dx: float, dy: float, layer: str) -> None:
    """Backpack/shoulder bag; ``layer`` is 'behind' (before the torso) or 'front' (after)."""
    bag, c, bw = ident["bag"], ident["bag_color"], ident["width"]
    if bag == "backpack":
        if view == "back" and layer == "front":
            draw.rounded_rectangle(xf.box(dx - 0.085 * bw, 0.2 + dy, dx + 0.085 * bw, 0.43 + dy),
                                   radius=0.02 * xf.ph, fill=c)  # fmt: skip
            draw.rectangle(xf.box(dx - 0.06 * bw, 0.33 + dy, dx + 0.06 * bw, 0.4 + dy),
                           fill=_shade(c, 0.7))  # fmt: skip
        elif view == "side" and layer == "behind":
            draw.rounded_rectangle(xf.box(dx - 0.15, 0.19 + dy, dx - 0.04, 0.43 + dy),
                                   radius=0.02 * xf.ph, fill=c)  # fmt: skip
        elif layer == "front":
            for sgn in ((-1, 1) if view == "front" else (1,)):
                x = dx + sgn * 0.07 * bw if view == "front" else dx - 0.01
                draw.line(xf.pts([(x, 0.17 + dy), (x + sgn * 0.005, 0.33 + dy)]), fill=c,
                          width=max(1, int(0.016 * xf.ph)))  # fmt: skip
    elif bag == "shoulder" and layer == "front":
        side = ident["bag_side"] * (-1 if view == "back" else 1)
        bx = dx + side * 0.12 * bw if view != "side" else dx + 0.02
        sx = dx - side * 0.09 * bw if view != "side" else dx
        draw.line(xf.pts([(sx, 0.17 + dy), (bx, 0.46 + dy)]), fill=c,
                  width=max(1, int(0.012 * xf.ph)))  # fmt: skip
        draw.rectangle(xf.box(bx - 0.045, 0.44 + dy, bx + 0.045, 0.55 + dy), fill=c)


def draw_person(
    img: Image.Image, ident: Mapping[str, Any], view: str, phase: float, xf: _Xf
) -> None:
    """Draw one pedestrian (identity ``ident``) at gait ``phase`` from ``view`` onto ``img``."""
    draw = ImageDraw.Draw(img)
    sk = skeleton(ident, view, phase)
    dx, dy = sk["dx"], sk["dy"]
    shadow = ImageDraw.Draw(img, "RGBA")
    shadow.ellipse(xf.box(-0.16, 0.975, 0.16, 1.025), fill=(0, 0, 0, 70))
    side = view == "side"
    far = 1 if side else None
    if side:
        _draw_arm(draw, xf, ident, sk["arms"][far], 0.78)
        _draw_leg(draw, xf, ident, sk["legs"][far], 0.78, view)
    _draw_head(draw, xf, ident, view, dx, dy, back_layer=True)
    _draw_bag(draw, xf, ident, view, dx, dy, "behind")
    for i in range(2):
        if i != far:
            _draw_leg(draw, xf, ident, sk["legs"][i], 1.0, view)
    pelvis = [(-0.08, 0.5), (0.08, 0.5), (0.085, 0.585), (0.0, 0.6), (-0.085, 0.585)]
    pc = ident["lower"]
    draw.polygon(xf.pts([(x * ident["width"] + dx, y + dy) for x, y in pelvis]), fill=pc)
    if ident["lower_type"] == "skirt":
        k = max(sk["legs"][0][1][0], sk["legs"][1][1][0]) if side else 0.0
        skirt = [(-0.09, 0.5), (0.09, 0.5), (0.13 + k * 0.4, 0.71), (-0.13 + k * 0.4, 0.71)]
        draw.polygon(xf.pts([(x * ident["width"] + dx, y + dy) for x, y in skirt]), fill=pc)
    torso = xf.pts(_torso_poly(ident, view, dx, dy))
    draw.polygon(torso, fill=ident["upper"])
    for x in ((-0.118, 0.118) if not side else (-0.02,)):
        r = 0.032 * ident["width"]
        draw.ellipse(xf.box(x * ident["width"] + dx - r, 0.165 + dy, x * ident["width"] + dx + r,
                            0.165 + dy + 2 * r), fill=ident["upper"])  # fmt: skip
    pat, c2 = ident["upper_pattern"], ident["upper2"]
    _pattern(draw, torso, pat, c2, xf, 0.07)
    if pat == "logo" and view == "front":
        draw.ellipse(xf.box(dx - 0.035, 0.24 + dy, dx + 0.035, 0.31 + dy), fill=c2)
    elif pat == "open" and view != "back":
        x0, x1 = (-0.025, 0.025) if view == "front" else (0.035, 0.07)
        band = _clip_box(torso, *xf.box(dx + x0, 0.0, dx + x1, 1.0)[::2], -1e9, 1e9)
        if len(band) >= 3:
            draw.polygon(band, fill=c2)
    _draw_bag(draw, xf, ident, view, dx, dy, "front")
    for i in range(2):
        if i != far:
            _draw_arm(draw, xf, ident, sk["arms"][i], 1.0)
    _draw_head(draw, xf, ident, view, dx, dy, back_layer=False)
