"""One's own footage as tracklets: a folder with one sub-folder of frames per tracklet, or loose
images (each its own one-frame tracklet), read as the evaluation reads a prepared split.

Frames are JPEG / PNG / BMP files of any name, sorted naturally (``frame2`` before
``frame10``) and of any size: the test transforms resize them to the run's
config.data.height x width, as the evaluation does. Every file is decoded once up front, so
an unreadable one is reported by name and left out (up to a limit) instead of being replaced
silently inside the pipeline.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from reid_jax.data import transforms
from reid_jax.data.tracklets import TrackletIndex
from reid_jax.files import atomic_write

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs by value: ``f2.jpg`` < ``f10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclasses.dataclass
class Tracklets:
    """Tracklet names and their frame files, in order."""

    names: list[str]
    files: list[list[Path]]

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(f) for f in self.files], np.int64)


def scan(root: str | Path) -> Tracklets:
    """The tracklets under ``root``: each sub-folder holding images is one (named after it,
    naturally sorted), and each loose image in ``root`` is one of a single frame.
    FileNotFoundError / ValueError naming ``root`` if it is missing or holds no image."""
    root = Path(root).absolute()  # the feature file names frames by absolute path
    if not root.is_dir():
        raise FileNotFoundError(f"input folder {root} does not exist")
    names, files = [], []
    for sub in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
        frames = _images(sub)
        if frames:
            names.append(sub.name)
            files.append(frames)
        else:
            logging.warning("skipping %s: no %s images in it", sub, "/".join(IMAGE_SUFFIXES))
    for image in _images(root):
        names.append(image.stem if image.stem not in names else image.name)
        files.append([image])
    if not names:
        raise ValueError(
            f"no images in {root}: expected one sub-folder of frames per tracklet, or images "
            f"({', '.join(IMAGE_SUFFIXES)})"
        )
    return Tracklets(names, files)


def drop_unreadable(tracklets: Tracklets, max_bad: int, progress: bool = True) -> Tracklets:
    """``tracklets`` without the frames that do not decode, each warned by name; a tracklet left
    without frames is dropped. ValueError listing them when more than ``max_bad`` are bad."""
    bad: list[str] = []
    frames = [f for fs in tracklets.files for f in fs]
    ok: dict[Path, bool] = {}
    bar = _progress(len(frames), "checking frames") if progress else None
    for path in frames:
        try:
            transforms.decode_jpeg(path.read_bytes(), name=str(path))
            ok[path] = True
        except (transforms.DecodeError, OSError) as e:
            ok[path] = False
            bad.append(str(path))
            logging.warning("unreadable image, skipped: %s", e)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if len(bad) > max_bad:
        raise ValueError(
            f"{len(bad)} images do not decode (the limit is {max_bad}): "
            + ", ".join(bad[:20])
            + (" ..." if len(bad) > 20 else "")
        )
    names, files = [], []
    for name, fs in zip(tracklets.names, tracklets.files):
        good = [f for f in fs if ok[f]]
        if good:
            names.append(name)
            files.append(good)
        else:
            logging.warning("tracklet %s dropped: none of its %d frames decodes", name, len(fs))
    if not names:
        raise ValueError(f"none of the {len(frames)} images decodes")
    return Tracklets(names, files)


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm  # noqa: PLC0415 (installed with tensorflow-datasets)

    return tqdm(total=total, desc=desc, unit="frame")


@dataclasses.dataclass(frozen=True)
class FileSource:
    """Random-access records ``{"jpeg": bytes, "name": path}`` over image files, the layout the
    test pipeline reads from a prepared split (picklable: paths only)."""

    paths: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.paths[int(i)]
        return {"jpeg": Path(path).read_bytes(), "name": path}


def unlabelled_index(lengths: np.ndarray) -> TrackletIndex:
    """A tracklet index over consecutive records (tracklet k is records start[k] ..
    start[k] + length[k]), identities unknown (pid -1, camera 0)."""
    lengths = np.asarray(lengths, np.int64)
    n = len(lengths)
    unknown = np.full(n, -1, np.int64)
    return TrackletIndex(
        start=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64), length=lengths,
        pid=unknown, camid=np.zeros(n, np.int64), is_query=np.zeros(n, bool), label=unknown,
    )  # fmt: skip


def as_split(tracklets: Tracklets) -> tuple[FileSource, TrackletIndex]:
    """(source, index) of the tracklets, as ``builders.load_split`` gives a prepared split."""
    paths = tuple(str(f) for fs in tracklets.files for f in fs)
    return FileSource(paths), unlabelled_index(tracklets.lengths)


FEATURE_KEYS = ("features", "names", "lengths", "files", "workdir", "step")


@dataclasses.dataclass
class Features:
    """Embedded tracklets: features [N, D], names, frame counts, frame files (concatenated, in
    tracklet order) and the run / checkpoint that embedded them."""

    features: np.ndarray
    names: np.ndarray
    lengths: np.ndarray
    files: np.ndarray
    workdir: str
    step: int

    def save(self, path: str | Path) -> None:
        """Writes the .npz atomically (a temporary file, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: np.savez(tmp, **dataclasses.asdict(self)))


def load_features(path: str | Path) -> Features:
    """Reads a features .npz written by ``reid_jax.embed``; ValueError naming a missing key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"features file {path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in FEATURE_KEYS if k not in z]
        if missing:
            raise ValueError(f"{path} lacks {missing}: not written by python -m reid_jax.embed")
        return Features(
            features=z["features"], names=z["names"], lengths=z["lengths"], files=z["files"],
            workdir=str(z["workdir"]), step=int(z["step"]),
        )  # fmt: skip


def embed_folder(embedder: Any, root: str | Path, max_bad: int, progress: bool = True) -> Features:
    """Embeds every tracklet under ``root`` (``scan``, ``drop_unreadable``) with ``embedder``
    (``model.Embedder``): the evaluation's extraction over the files."""
    tracklets = drop_unreadable(scan(root), max_bad, progress)
    source, index = as_split(tracklets)
    logging.info(
        "embedding %d tracklets (%d frames) with %s step %d", len(tracklets.names),
        len(source), embedder.workdir, embedder.step,
    )  # fmt: skip
    feats = embedder.embed_tracklets(source, index)
    return Features(
        features=feats, names=np.asarray(tracklets.names), lengths=tracklets.lengths,
        files=np.asarray(source.paths), workdir=str(Path(embedder.workdir).absolute()),
        step=int(embedder.step),
    )  # fmt: skip
