"""Footage folders: layout, natural order, unreadable and odd images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from reid_jax.inference import folders


def _image(path, size=(16, 8), fmt="JPEG"):
    buf = io.BytesIO()
    Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(buf, format=fmt)
    path.write_bytes(buf.getvalue())


def test_natural_order_layout_and_records(tmp_path):
    for name in ("f10.jpg", "f2.jpg", "F1.png", "notes.txt"):
        (tmp_path / "b").mkdir(exist_ok=True)
        if name.endswith(("jpg", "png")):
            _image(tmp_path / "b" / name, fmt="PNG" if name.endswith("png") else "JPEG")
        else:
            (tmp_path / "b" / name).write_text("x")
    (tmp_path / "a10").mkdir()
    _image(tmp_path / "a10" / "x.jpg")
    (tmp_path / "a9").mkdir()
    _image(tmp_path / "a9" / "x.jpg")
    (tmp_path / "empty").mkdir()
    _image(tmp_path / "loose.jpeg")
    tracklets = folders.scan(tmp_path)
    assert tracklets.names == ["a9", "a10", "b", "loose"]
    assert [f.name for f in tracklets.files[2]] == ["F1.png", "f2.jpg", "f10.jpg"]
    source, index = folders.as_split(tracklets)
    assert index.start.tolist() == [0, 1, 2, 5] and index.length.tolist() == [1, 1, 3, 1]
    assert (index.pid == -1).all() and len(source) == 6
    record = source[3]
    assert record["name"].endswith("b/f2.jpg") and record["jpeg"][:2] == b"\xff\xd8"


def test_empty_missing_and_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"input folder {tmp_path}/nope does not exist"):
        folders.scan(tmp_path / "nope")
    (tmp_path / "t").mkdir()
    with pytest.raises(ValueError, match=f"no images in {tmp_path}: expected one sub-folder"):
        folders.scan(tmp_path)
    _image(tmp_path / "t" / "1.jpg")
    (tmp_path / "t" / "2.jpg").write_bytes(b"not an image")
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "1.png").write_bytes(b"\x89PNG broken")
    _image(tmp_path / "big.jpg", size=(300, 100))  # another size: resized later, kept here
    tracklets = folders.scan(tmp_path)
    kept = folders.drop_unreadable(tracklets, max_bad=2, progress=False)
    assert kept.names == ["t", "big"] and [len(f) for f in kept.files] == [1, 1]
    with pytest.raises(ValueError, match=r"2 images do not decode \(the limit is 1\): .*2\.jpg"):
        folders.drop_unreadable(tracklets, max_bad=1, progress=False)
