"""Tests for JPEG decoding, clip-consistent augmentation and normalisation constants."""

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from reid_jax.data import transforms as tr
from reid_jax.data.transforms import (
    ERASE_FILL,
    DecodeError,
    compose,
    decode_jpeg,
    normalize,
    random_crop_pad,
    random_erasing,
    random_flip,
    resize,
    train_transforms,
)

H, W, T = 32, 16, 4


def _jpeg(array, mode=None, quality=95):
    img = Image.fromarray(array)
    if mode is not None:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _smooth_image(h=64, w=32):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 255 // h, xx * 255 // w, (yy + xx) * 255 // (h + w)], -1).astype(np.uint8)


def _coded_clip():
    """Frame i: pixel (r, c) = (r + 1, c + 1, 10 * i + 1).

    Neither the pad value (0) nor the erase fill (124, 116, 104) occurs in it.
    """
    rr, cc = np.mgrid[0:H, 0:W]
    frames = [np.stack([rr + 1, cc + 1, np.full_like(rr, 10 * i + 1)], -1) for i in range(T)]
    return np.stack(frames).astype(np.uint8)


# ---------------------------------------------------------------- normalisation


def test_constants():
    assert tr.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert tr.IMAGENET_STD == (0.229, 0.224, 0.225)
    assert ERASE_FILL == (124, 116, 104)


def test_normalize_numpy_hand_values():
    x = np.array([[0, 0, 0], [255, 255, 255], [124, 116, 104]], dtype=np.uint8)
    out = normalize(x)
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out[0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
    np.testing.assert_allclose(out[1], [0.515 / 0.229, 0.544 / 0.224, 0.594 / 0.225], rtol=1e-6)
    assert np.abs(out[2]).max() < 0.01  # the erase fill normalises to ~0
    np.testing.assert_allclose(normalize(x.astype(np.float32)), out)


def test_normalize_jax_matches_numpy():
    jnp = pytest.importorskip("jax.numpy")
    clip = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    out = normalize(jnp.asarray(clip), xp=jnp)
    assert out.dtype == jnp.float32 and out.shape == clip.shape
    ref = (clip / 255.0 - np.array(tr.IMAGENET_MEAN)) / np.array(tr.IMAGENET_STD)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- decoding


def test_decode_jpeg_round_trip():
    image = _smooth_image()
    out = decode_jpeg(_jpeg(image), name="a.jpg")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).mean() < 3.0


def test_decode_grayscale_and_cmyk_to_rgb():
    image = _smooth_image()
    gray = decode_jpeg(_jpeg(image, "L"))
    assert gray.shape == (64, 32, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    expected_gray = np.asarray(Image.fromarray(image).convert("L"), dtype=int)
    assert np.abs(gray[..., 0].astype(int) - expected_gray).mean() < 3.0
    cmyk = decode_jpeg(_jpeg(image, "CMYK"))
    assert cmyk.shape == (64, 32, 3)
    assert np.abs(cmyk.astype(int) - image).mean() < 4.0


@pytest.mark.parametrize("data", [b"not a jpeg at all", b"", "truncated"])
def test_decode_error_names_file(data):
    if data == "truncated":
        data = _jpeg(_smooth_image())[:200]
    with pytest.raises(DecodeError, match="0001C1T0001F001.jpg") as info:
        decode_jpeg(data, name="0001C1T0001F001.jpg")
    assert isinstance(info.value, ValueError)
    assert info.value.name == "0001C1T0001F001.jpg"
    again = pickle.loads(pickle.dumps(info.value))  # crosses grain worker processes
    assert isinstance(again, DecodeError) and again.name == info.value.name
    assert str(again) == str(info.value)


# ---------------------------------------------------------------- single transforms


def test_resize_shape_and_no_op():
    clip = np.full((2, 40, 20, 3), (10, 200, 77), dtype=np.uint8)
    out = resize(clip, 32, 16)
    assert out.shape == (2, 32, 16, 3) and out.dtype == np.uint8
    assert (out == np.array([10, 200, 77], dtype=np.uint8)).all()  # constant stays constant
    assert resize(out, 32, 16) is out
    up = resize(np.arange(2, dtype=np.uint8).repeat(3).reshape(1, 1, 2, 3) * 100, 1, 4)
    assert up[0, 0, 0, 0] < up[0, 0, -1, 0]  # left-to-right ramp preserved when upsampling
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        resize(np.zeros((4, 4, 3), np.uint8), 2, 2)


def test_random_crop_pad_matches_padded_reference():
    clip = np.random.default_rng(0).integers(1, 256, (3, H, W, 3), dtype=np.uint8)
    pad = 3
    padded = np.pad(clip, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = set()
    for seed in range(40):
        out = random_crop_pad(clip, np.random.default_rng(seed), pad=pad)
        assert out.shape == clip.shape and out.dtype == np.uint8
        matches = [
            (oy, ox)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            if np.array_equal(out, padded[:, oy : oy + H, ox : ox + W])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets are random
    np.testing.assert_array_equal(random_crop_pad(clip, np.random.default_rng(0), pad=0), clip)


def test_random_flip_is_exact_mirror():
    clip = np.random.default_rng(0).integers(0, 256, (T, H, W, 3), dtype=np.uint8)
    mirrored = random_flip(clip, np.random.default_rng(0), p=1.0)
    np.testing.assert_array_equal(mirrored, clip[:, :, ::-1])
    np.testing.assert_array_equal(random_flip(clip, np.random.default_rng(0), p=0.0), clip)
    flipped = [
        not np.array_equal(random_flip(clip, np.random.default_rng(s)), clip) for s in range(40)
    ]
    assert 5 < sum(flipped) < 35


def test_random_erasing_fill_rectangle_and_input_untouched():
    clip = np.random.default_rng(0).integers(0, 60, (T, 64, 32, 3), dtype=np.uint8)
    before = clip.copy()
    for seed in range(20):
        out = random_erasing(clip, np.random.default_rng(seed), p=1.0)
        np.testing.assert_array_equal(clip, before)  # input never modified
        changed = (out != clip).any(-1)
        assert changed.any()
        assert (out[changed] == np.array(ERASE_FILL, np.uint8)).all()
        assert (changed == changed[:1]).all()  # same rectangle in every frame
        rows, cols = np.flatnonzero(changed[0].any(1)), np.flatnonzero(changed[0].any(0))
        box = changed[0][rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and box.sum() == changed[0].sum()  # a filled axis-aligned rectangle
        assert 0.01 < box.size / (64 * 32) < 0.45
    assert random_erasing(clip, np.random.default_rng(0), p=0.0) is clip


# ---------------------------------------------------------------- composition / consistency


def test_train_transforms_identical_frames_stay_identical():
    frame = np.random.default_rng(1).integers(0, 256, (40, 20, 3), dtype=np.uint8)
    clip = np.repeat(frame[None], T, axis=0)
    for seed in range(10):
        fn = compose(train_transforms(H, W, pad=4, flip_p=0.5, erase_p=0.7))
        out = fn(clip, np.random.default_rng(seed))
        assert out.shape == (T, H, W, 3) and out.dtype == np.uint8
        assert (out == out[:1]).all()


@pytest.mark.parametrize("seed", range(6))
def test_train_transforms_apply_same_geometry_to_differing_frames(seed):
    clip = _coded_clip()
    fn = compose(train_transforms(H, W, pad=4, flip_p=0.5, erase_p=1.0 if seed < 3 else 0.5))
    out = fn(clip, np.random.default_rng(seed)).astype(int)
    pad_mask = (out == 0).all(-1)
    fill_mask = (out == np.array(ERASE_FILL)).all(-1)
    src = ~pad_mask & ~fill_mask
    assert (pad_mask == pad_mask[:1]).all() and (fill_mask == fill_mask[:1]).all()
    if seed < 3:
        assert fill_mask.any()
    # source coordinates (channels 0, 1) identical in every frame: same crop offset and flip
    assert (out[..., :2] == out[:1, ..., :2]).all()
    # each frame's content comes from that same frame (channel 2 codes the frame index)
    for i in range(T):
        assert (out[i][src[i], 2] == 10 * i + 1).all()
    # the mapping is a pure shift (+ optional mirror): source row - row and source col +/- col fixed
    rr, cc = np.mgrid[0:H, 0:W]
    m = src[0]
    dy = out[0, ..., 0][m] - 1 - rr[m]
    assert len(np.unique(dy)) == 1 and abs(int(dy[0])) <= 4
    sc = out[0, ..., 1][m] - 1
    assert len(np.unique(sc - cc[m])) == 1 or len(np.unique(sc + cc[m])) == 1


def test_compose_order_and_pickle():
    add = lambda clip, rng: clip + 1  # noqa: E731
    double = lambda clip, rng: clip * 2  # noqa: E731
    x = np.full((1, 1, 1, 3), 3)
    assert (compose([add, double])(x, None) == 8).all()
    assert (compose([double, add])(x, None) == 7).all()
    fn = compose(train_transforms(H, W))
    clone = pickle.loads(pickle.dumps(fn))
    clip = _coded_clip()
    np.testing.assert_array_equal(
        fn(clip, np.random.default_rng(9)), clone(clip, np.random.default_rng(9))
    )


def test_test_transforms_resize_only_and_deterministic():
    clip = np.random.default_rng(0).integers(0, 256, (T, 40, 20, 3), dtype=np.uint8)
    fns = tr.test_transforms(H, W)
    assert len(fns) == 1
    a = compose(fns)(clip, np.random.default_rng(0))
    b = compose(fns)(clip, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, resize(clip, H, W))
    assert len(train_transforms(H, W)) == 4
