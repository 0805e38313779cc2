"""Reader for PRID-2011 multi-shot (Hirzer et al., SCIA 2011) under the video re-id protocol of
Wang et al. (ECCV 2014): 10 trials, each a random half of the persons for training and the
other half for testing, with cam_a sequences as queries and cam_b sequences as the gallery.

Layout (prid_2011.zip extracted into the manual dir; `prid_2011/` may be omitted)::

    prid_2011/multi_shot/cam_a/person_0001/0001.png ...   (385 persons)
    prid_2011/multi_shot/cam_b/person_0001/0001.png ...   (749 persons)
    splits_prid2011.json                                  (optional)

Only persons 1..200 are the same people in both cameras (folder numbers above 200 are different
people in cam_a and cam_b), so only they can be used.

Trials:
  * With `splits_prid2011.json` (deep-person-reid's file, derived from the iLIDS-VID release's
    PRID split): a JSON list of trials, each ``{"train": [...], "test": [...]}`` with person
    folder names ("person_0001") or numbers. Those persons are used as given.
  * Without it: the persons of 1..200 whose sequences in BOTH cameras have at least
    ``MIN_FRAMES = 27`` frames, split in 10 random halves. Trial t permutes that sorted list with
    ``numpy.random.default_rng([RANDOM_SEED, t])`` (RANDOM_SEED = 2011); the first half
    (floor(n/2) persons) is the test set, the rest the training set, as in the split file.

Why at least 27 and not "more than 21": the subset is usually described (after Wang et al.)
as the 178 persons whose sequences have more than 21 frames, but the official 178-person split
shipped with iLIDS-VID (train_test_splits_prid.mat, ls_set [10, 178]) matches a minimum of 27
frames in both cameras, while a minimum of 21 reportedly keeps 183 persons. Evidence (public
code, not checked here against the real data): Quality Aware Network's generate_prid2011_data.m
keeps sequences with "len >= 29" entries of a listing that includes '.' and '..' (27 frames),
and a torchreid-derived PRID2011 reader asserts 178 persons for minframes=27 and 183 for 21.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from reid_jax.data import ilidsvid
from reid_jax.data.mars import TrackletTable

MULTI_SHOT = ("multi_shot", "prid_2011/multi_shot")  # accepted locations, first found wins
CAMERAS = {"cam_a": 1, "cam_b": 2}
SHARED_IDS = 200  # persons 1..200 appear in both cameras
MIN_FRAMES = 27
NUM_TRIALS = 10
RANDOM_SEED = 2011
SPLIT_FILE = "splits_prid2011.json"
PERSON_RE = re.compile(r"person_(?P<pid>\d+)")
FRAME_RE = re.compile(r"(?P<frame>\d+)\.png")
GET_PRID = (
    "PRID-2011 comes from https://www.tugraz.at/institute/icg/research/team-bischof/lrs/"
    "downloads/prid11 (prid_2011.zip); the optional splits_prid2011.json is deep-person-reid's "
    "split file (see docs/datasets.md)."
)
MANUAL_INSTRUCTIONS = (
    "Put PRID-2011 in the manual dir (e.g. `data/manual/prid2011/`) as:\n"
    "  prid_2011/multi_shot/cam_a/person_0001/0001.png   (and cam_b/; prid_2011/ optional)\n"
    "  splits_prid2011.json   (optional; else 10 seeded random halves)\n" + GET_PRID
)
_SPLIT_SHAPE = (
    'a JSON list of trials, each {"train": [...], "test": [...]} listing person folder names '
    '("person_0001") or numbers (the deep-person-reid splits_prid2011.json format)'
)


def find_multi_shot(root: Path) -> str:
    """The multi_shot folder, relative to root; FileNotFoundError listing where it was sought."""
    for rel in MULTI_SHOT:
        if (root / rel).is_dir():
            return rel
    tried = " or ".join(str(root / rel) for rel in MULTI_SHOT)
    raise FileNotFoundError(f"missing PRID-2011 folder {tried}. " + GET_PRID)


def _person(value: object, path: Path, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = PERSON_RE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(
            f"{path}: {where} holds {value!r}; expected a person folder name like 'person_0001' "
            "or a person number"
        )
    return int(m["pid"])


def read_split_file(path: Path, persons: list[int]) -> ilidsvid.Trials:
    """Validated trials from a splits_prid2011.json; each person must exist in both cameras."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read split file {path}: {e}") from e
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected {_SPLIT_SHAPE}; got {type(data).__name__}")
    known = set(persons)
    trials = []
    for t, entry in enumerate(data):
        if not isinstance(entry, dict) or not {"train", "test"} <= set(entry):
            raise ValueError(f"{path}: trial {t} is {str(entry)[:80]!r}; expected {_SPLIT_SHAPE}")
        trial = {}
        for part in ("train", "test"):
            if not isinstance(entry[part], list) or not entry[part]:
                raise ValueError(f"{path}: trial {t} {part!r} must be a non-empty list")
            ids = [_person(v, path, f"trial {t} {part!r}") for v in entry[part]]
            unknown = sorted(set(ids) - known)
            if unknown:
                raise ValueError(
                    f"{path}: trial {t} {part!r} names persons {unknown[:5]} that do not have a "
                    f"sequence in both cameras (persons 1..{SHARED_IDS} found: {len(known)})"
                )
            if len(set(ids)) != len(ids):
                raise ValueError(f"{path}: trial {t} {part!r} lists a person twice")
            trial[part] = sorted(ids)
        both = sorted(set(trial["train"]) & set(trial["test"]))
        if both:
            raise ValueError(f"{path}: trial {t} has persons {both[:5]} in both train and test")
        trials.append(trial)
    return trials


def random_halves(persons: list[int], num_trials: int, seed: int) -> ilidsvid.Trials:
    """Trial t: permute sorted `persons` with default_rng([seed, t]); first floor(n/2) are test."""
    if len(persons) < 2:
        raise ValueError(f"need at least 2 persons to split into train and test, got {persons}")
    half = len(persons) // 2
    trials = []
    for t in range(num_trials):
        perm = np.random.default_rng([seed, t]).permutation(np.asarray(sorted(persons)))
        trials.append(
            {"train": sorted(map(int, perm[half:])), "test": sorted(map(int, perm[:half]))}
        )
    return trials


def eligible_persons(seqs: dict[int, dict[int, list[str]]], min_frames: int) -> list[int]:
    """Persons whose sequences in both cameras have at least `min_frames` frames."""
    return sorted(p for p in seqs[1] if min(len(seqs[c][p]) for c in (1, 2)) >= min_frames)


def read_prid2011(
    root: str | Path, min_frames: int = MIN_FRAMES
) -> tuple[TrackletTable, ilidsvid.Trials]:
    """Reads a PRID-2011 tree: (table of the persons used by any trial, trials)."""
    root = Path(root)
    base = find_multi_shot(root)
    seqs = ilidsvid.read_cameras(
        root,
        base,
        CAMERAS,
        PERSON_RE,
        "person_<NNNN>",
        FRAME_RE,
        "<frame number>.png",
        keep=range(1, SHARED_IDS + 1),
    )
    persons = ilidsvid.require_both_cameras(seqs, root / base, CAMERAS)
    split_path = root / SPLIT_FILE
    if split_path.exists():
        trials = read_split_file(split_path, persons)
    else:
        trials = random_halves(eligible_persons(seqs, min_frames), NUM_TRIALS, RANDOM_SEED)
    used = {p for trial in trials for part in trial.values() for p in part}
    return ilidsvid.two_camera_table(seqs, used), trials
