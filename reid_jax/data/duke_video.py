"""Reader for DukeMTMC-VideoReID (Wu et al., CVPR 2018; Ristani et al., ECCVW 2016).

Layout (DukeMTMC-VideoReID.zip extracted; the manual dir holds these three folders)::

    train/<pid4>/<tracklet>/<pid4>_C<cam>_F<frame4>_X<n>.jpg    702 ids, 2,196 tracklets
    query/<pid4>/<tracklet>/...                                 one tracklet per test id
    gallery/<pid4>/<tracklet>/...                               702 test ids + 408 distractors

F<frame> is the frame's index within the tracklet (some tracklets start at F0002) and X<n> its
frame number in the camera's video; names without the underscores (0001C6F0099X30823.jpg, as in
the dataset's README) are accepted too. Frames are ordered by F, parsed as an integer.

The "test" table is the query tracklets (is_query) followed by the gallery tracklets. The
standard evaluation (the dataset's own open-reid code and deep-person-reid) ranks the gallery
folder only and drops gallery tracklets with the query's identity AND camera, i.e. the
`legacy` protocol of reid_jax.evaluation.metrics (see docs/datasets.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from reid_jax.data import ilidsvid
from reid_jax.data.mars import TrackletTable

FOLDERS = {"train": ("train",), "test": ("query", "gallery")}
QUERY_FOLDER = "query"
NUM_CAMERAS = 8
PID_RE = re.compile(r"(?P<pid>\d{4})")
TRACKLET_RE = re.compile(r"(?P<tracklet>\d+)")
FRAME_RE = re.compile(
    r"(?P<pid>\d{4})(?P<sep>_?)C(?P<cam>\d)(?P=sep)F(?P<frame>\d{4,})(?P=sep)X(?P<x>\d+)\.jpg"
)
FRAME_PATTERN = "<pid4>_C<cam>_F<frame, 4+ digits>_X<n>.jpg (or without the underscores)"
GET_DUKE_VIDEO = (
    "DukeMTMC-VideoReID comes from https://github.com/Yu-Wu/DukeMTMC-VideoReID "
    "(DukeMTMC-VideoReID.zip); the manual dir must hold its train/, query/ and gallery/."
)
MANUAL_INSTRUCTIONS = (
    "Put DukeMTMC-VideoReID in the manual dir (e.g. `data/manual/duke_video/`) as:\n"
    "  train/<pid4>/<tracklet>/<pid4>_C<cam>_F<frame4>_X<n>.jpg\n"
    "  query/<pid4>/<tracklet>/...\n"
    "  gallery/<pid4>/<tracklet>/...\n" + GET_DUKE_VIDEO
)


def _tracklet_camera(root: Path, rel: str, names: list[str]) -> int:
    """The one camera of a tracklet's frames (all names already match FRAME_RE)."""
    cams = {int(FRAME_RE.fullmatch(n.rsplit("/", 1)[1])["cam"]) for n in names}
    if len(cams) != 1:
        raise ValueError(f"tracklet {root / rel} mixes frames of cameras {sorted(cams)}")
    cam = cams.pop()
    if not 1 <= cam <= NUM_CAMERAS:
        raise ValueError(f"tracklet {root / rel}: camera {cam} outside 1..{NUM_CAMERAS}")
    return cam


def read_folder(root: str | Path, folder: str, is_query: bool = False) -> list[ilidsvid.Tracklet]:
    """Tracklets of one top-level folder, by person number then tracklet number."""
    root = Path(root)
    what = f"DukeMTMC-VideoReID folder (expected {', '.join(sum(FOLDERS.values(), ()))})"
    names = ilidsvid.list_dir(root / folder, what)
    out = []
    for pid, pname, _ in ilidsvid.numbered(root / folder, names, PID_RE, "<pid4>", "pid"):
        rel_person = f"{folder}/{pname}"
        tnames = ilidsvid.list_dir(root / rel_person, "person folder")
        tracklets = ilidsvid.numbered(
            root / rel_person, tnames, TRACKLET_RE, "<tracklet number>", "tracklet"
        )
        if not tracklets:
            raise ValueError(f"person folder {root / rel_person} holds no tracklet folders")
        for _, tname, _ in tracklets:
            rel = f"{rel_person}/{tname}"
            paths = ilidsvid.sequence_frames(root, rel, FRAME_RE, FRAME_PATTERN, {"pid": pid})
            cam = _tracklet_camera(root, rel, paths)
            out.append(ilidsvid.Tracklet(pid, cam, paths, is_query))
    if not out:
        raise ValueError(f"DukeMTMC-VideoReID folder {root / folder} holds no person folders")
    return out


def read_duke_video(root: str | Path) -> dict[str, TrackletTable]:
    """Reads the tree into {"train": table, "test": query tracklets then gallery tracklets}."""
    root = Path(root)
    missing = [f for fs in FOLDERS.values() for f in fs if not (root / f).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"missing DukeMTMC-VideoReID folders {[str(root / f) for f in missing]}. "
            + GET_DUKE_VIDEO
        )
    parts = {
        split: [t for f in folders for t in read_folder(root, f, f == QUERY_FOLDER)]
        for split, folders in FOLDERS.items()
    }
    shared = {t.pid for t in parts["train"]} & {t.pid for t in parts["test"]}
    if shared:
        raise ValueError(
            f"{root}: persons {sorted(shared)[:5]} appear both in train/ and in query/ or "
            "gallery/; DukeMTMC-VideoReID's training and test identities are disjoint"
        )
    return {split: ilidsvid.table_from_tracklets(ts) for split, ts in parts.items()}
