"""Tests for the PRID-2011 reader and builder: subset rule, random and file splits, errors."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_jax.data import builders, prid2011
from reid_jax.evaluation import metrics

# (cam_a frames, cam_b frames) of persons 1..8: with the default minimum of 27 frames in BOTH
# cameras, persons 1, 2, 3, 5, 8 are eligible; 4, 6 and 7 have a sequence of 26 frames.
LENGTHS = {
    1: (27, 30),
    2: (40, 27),
    3: (28, 28),
    4: (26, 40),
    5: (30, 31),
    6: (40, 26),
    7: (26, 26),
    8: (29, 27),
}
ELIGIBLE = [1, 2, 3, 5, 8]
# Folders above 200 are different people in each camera and must be ignored.
EXTRA = {"cam_a": [201], "cam_b": [201, 202]}
# Frame numbers 9990.. cross 9999 -> 10000, so string order ('10000' < '9990') is wrong.
FIRST_FRAME = 9990


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (3, 5), (value % 256, value // 256 % 256, 1)).save(buf, "PNG")
    return buf.getvalue()


def write_tree(root: Path, base: str = "prid_2011/multi_shot", lengths=LENGTHS) -> dict:
    """Writes the tiny PRID tree (files in shuffled order); returns (pid, cam) -> frame paths."""
    expected = {}
    for pid, pair in lengths.items():
        for cam, n in zip((1, 2), pair):
            folder = f"{base}/cam_{'ab'[cam - 1]}/person_{pid:04d}"
            expected[(pid, cam)] = [f"{folder}/{FIRST_FRAME + i}.png" for i in range(n)]
    files = [rel for rels in expected.values() for rel in rels]
    files += [f"{base}/{cam}/person_{p:04d}/0001.png" for cam, ps in EXTRA.items() for p in ps]
    random.Random(1).shuffle(files)
    for i, rel in enumerate(files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png(i))
    return expected


def write_split_file(root: Path, trials) -> None:
    (root / prid2011.SPLIT_FILE).write_text(json.dumps(trials))


def test_random_halves_of_the_eligible_persons(tmp_path):
    expected = write_tree(tmp_path)
    table, trials = prid2011.read_prid2011(tmp_path)
    assert len(trials) == prid2011.NUM_TRIALS == 10
    for trial in trials:
        assert sorted(trial["train"] + trial["test"]) == ELIGIBLE
        assert len(trial["test"]) == 2 and len(trial["train"]) == 3  # floor(5 / 2) test
    assert len({tuple(t["test"]) for t in trials}) > 1  # trials differ
    # The documented rule pinned: trial t permutes [1, 2, 3, 5, 8] with default_rng([2011, t]).
    assert trials[0] == {"test": [1, 5], "train": [2, 3, 8]}
    assert trials[1] == {"test": [1, 3], "train": [2, 5, 8]}
    assert trials[2] == {"test": [3, 5], "train": [1, 2, 8]}
    assert table.pid.tolist() == [p for p in ELIGIBLE for _ in (1, 2)]
    assert table.camid.tolist() == [1, 2] * 5
    assert table.is_query.tolist() == [True, False] * 5  # cam_a = query
    assert table.paths == [rel for p in ELIGIBLE for c in (1, 2) for rel in expected[(p, c)]]
    assert prid2011.read_prid2011(tmp_path)[1] == trials  # deterministic


def test_min_frames_threshold_is_inclusive_in_both_cameras(tmp_path):
    write_tree(tmp_path)
    _, trials = prid2011.read_prid2011(tmp_path, min_frames=26)
    assert sorted(trials[0]["train"] + trials[0]["test"]) == list(range(1, 9))
    _, trials = prid2011.read_prid2011(tmp_path, min_frames=28)
    assert sorted(trials[0]["train"] + trials[0]["test"]) == [3, 5]


def test_split_file_is_used_as_given(tmp_path):
    write_tree(tmp_path, base="multi_shot")  # prid_2011/ may be omitted
    given = [
        {"train": ["person_0004", "person_0002"], "test": ["person_0007", "person_0001"]},
        {"train": [7, 1], "test": [2, 4]},
    ]
    write_split_file(tmp_path, given)
    table, trials = prid2011.read_prid2011(tmp_path)
    assert trials == [{"train": [2, 4], "test": [1, 7]}, {"train": [1, 7], "test": [2, 4]}]
    assert table.pid.tolist() == [1, 1, 2, 2, 4, 4, 7, 7]  # short sequences allowed when listed


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"train": [1], "test": [2]}, "expected a JSON list of trials"),
        ([], "expected a JSON list of trials"),
        ([{"train": [1, 2]}], r"trial 0 .*expected a JSON list of trials"),
        ([{"train": [1], "test": []}], "trial 0 'test' must be a non-empty list"),
        ([{"train": ["p_1"], "test": [2]}], "holds 'p_1'; expected a person folder name"),
        ([{"train": ["person_0201"], "test": [2]}], r"persons \[201\] that do not have"),
        ([{"train": [1, 2], "test": [2, 3]}], r"persons \[2\] in both train and test"),
        ([{"train": [1, 1], "test": [2]}], "lists a person twice"),
    ],
)
def test_split_file_shape_errors(tmp_path, content, match):
    write_tree(tmp_path)
    write_split_file(tmp_path, content)
    with pytest.raises(ValueError, match=match) as e:
        prid2011.read_prid2011(tmp_path)
    assert str(tmp_path / prid2011.SPLIT_FILE) in str(e.value)


def test_split_file_that_is_not_json(tmp_path):
    write_tree(tmp_path)
    (tmp_path / prid2011.SPLIT_FILE).write_text("[{'train': [1]")
    with pytest.raises(ValueError, match="cannot read split file"):
        prid2011.read_prid2011(tmp_path)


BREAKAGES = [
    (
        lambda b: _rmtree(b / "cam_b"),
        FileNotFoundError,
        r"camera folder.*\['cam_a', 'cam_b'\]",
    ),
    (
        lambda b: (b / "cam_a/person_0003/9990.png").rename(b / "cam_a/person_0003/img_1.png"),
        ValueError,
        "img_1.png: name does not match the pattern <frame number>.png",
    ),
    (
        lambda b: (b / "cam_a/person_0003/9990.png").rename(b / "cam_a/person_0003/09991.png"),
        ValueError,
        "the same frame 9991",
    ),
    (lambda b: (b / "cam_b/person_x").mkdir(), ValueError, "person_<NNNN>"),
    (
        lambda b: _rmtree(b / "cam_b/person_0005"),
        ValueError,
        r"persons \[5\] have a sequence folder in cam_a/ but none in cam_b/",
    ),
]


@pytest.mark.parametrize(("breakage", "error", "match"), BREAKAGES)
def test_layout_errors_name_the_path(tmp_path, breakage, error, match):
    write_tree(tmp_path)
    breakage(tmp_path / "prid_2011/multi_shot")
    with pytest.raises(error, match=match) as e:
        prid2011.read_prid2011(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_missing_multi_shot_lists_both_accepted_places(tmp_path):
    with pytest.raises(FileNotFoundError, match="multi_shot or .*prid_2011/multi_shot"):
        prid2011.read_prid2011(tmp_path)


def _rmtree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    path.rmdir()


def test_builder_serves_every_trial_from_one_prepared_dataset(tmp_path):
    expected = write_tree(tmp_path / "manual")
    builders.prepare("prid2011", tmp_path / "data", tmp_path / "manual", num_workers=0)
    assert builders.num_trials("prid2011", tmp_path / "data") == 10
    _, trials = prid2011.read_prid2011(tmp_path / "manual")
    for trial in (0, 9):
        train_src, train = builders.load_split("prid2011", tmp_path / "data", "train", trial)
        source, test = builders.load_split("prid2011", tmp_path / "data", "test", trial)
        assert sorted(set(train.pid)) == trials[trial]["train"] and not train.is_query.any()
        assert sorted(set(test.pid)) == trials[trial]["test"]
        q, g = metrics.query_gallery_indices(test.pid, test.is_query, "legacy")
        assert (test.camid[q] == 1).all() and (test.camid[g] == 2).all()
        assert sorted(test.pid[q]) == sorted(test.pid[g]) == trials[trial]["test"]
        for k in range(len(test.pid)):
            ids = range(int(test.start[k]), int(test.start[k] + test.length[k]))
            rels = expected[(int(test.pid[k]), int(test.camid[k]))]
            assert [builders.record_name(source[i]) for i in ids] == rels
            assert source[ids[-1]]["jpeg"] == (tmp_path / "manual" / rels[-1]).read_bytes()
    assert np.array_equal(train.label, np.repeat(np.arange(3), 2))
