"""Corrupted-frame AUC on hand-computed cases, and sidecar alignment errors."""

import numpy as np
import pytest

from reid_jax.experiments import frames


def _dump(weights, offsets, tracklet=(0,), start=(0,)):
    return {"weights": np.asarray(weights, np.float32), "offsets": np.asarray(offsets),
            "tracklet": np.asarray(tracklet), "start": np.asarray(start)}  # fmt: skip


def test_auc_hand_computed():
    # one chunk: frames 0..3 = clean, occlusion, clean, blur with weights .4 .3 .2 .1
    labels = np.array(["clean", "occlusion", "clean", "blur"])
    out = frames.corrupted_frame_auc(_dump([[0.4, 0.3, 0.2, 0.1]], [[0, 1, 2, 3]]), labels)
    assert out["any"] == {"auc": 0.75, "pairs": 4}  # .4>.3 .4>.1 .2<.3 .2>.1
    assert out["occlusion"] == {"auc": 0.5, "pairs": 2}
    assert out["blur"] == {"auc": 1.0, "pairs": 2}
    assert out["switch"]["pairs"] == 0 and np.isnan(out["switch"]["auc"])


def test_uniform_weights_give_one_half_and_pairs_stay_within_chunks():
    labels = np.array(["clean", "switch", "clean", "clean", "switch", "junk"])
    # tracklet 0 = records 0..2, tracklet 1 = records 3..5; weights compare only within a row
    dump = _dump([[0.25] * 3, [0.9, 0.05, 0.05]], [[0, 1, 2], [0, 1, 2]], (0, 1), (0, 3))
    out = frames.corrupted_frame_auc(dump, labels)
    # row 0: 2 pairs, ties -> 1/2 each; row 1: clean .9 > switch .05 -> 1; junk never counts
    assert out["switch"] == {"auc": pytest.approx((0.5 + 0.5 + 1.0) / 3), "pairs": 3}


def test_repeated_last_frame_counts_once():
    labels = np.array(["clean", "blur"])
    # a 2-frame tracklet padded to T=4 by repeating its last frame
    dump = _dump([[0.4, 0.2, 0.2, 0.2]], [[0, 1, 1, 1]])
    records, first = frames.chunk_records(dump)
    assert first.tolist() == [[True, True, False, False]]
    assert frames.corrupted_frame_auc(dump, labels)["blur"] == {"auc": 1.0, "pairs": 1}


def test_sidecar_missing_and_mismatch(tmp_path):
    with pytest.raises(FileNotFoundError, match="synth_frames.csv not found"):
        frames.read_sidecar(tmp_path)
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "synth_frames.csv").write_text(
        "name,split,pid,camera,tracklet,frame,kind,corruption,gait_phase\n"
        "0001C1T0001F001.jpg,test,1,1,1,1,identity,blur,0.5\n"
        "00-1C1T0001F001.jpg,test,-1,1,1,1,junk_background,clean,\n"
        "00-1C1T0002F001.jpg,test,-1,1,2,1,junk_fragment,clean,0.25\n"
    )
    table = frames.read_sidecar(tmp_path)
    assert table["0001C1T0001F001.jpg"] == ("blur", 0.5)
    assert table["00-1C1T0001F001.jpg"][0] == frames.JUNK
    assert table["00-1C1T0002F001.jpg"] == (frames.JUNK, 0.25)
    source = [
        {"name": b"bbox_test/0001/0001C1T0001F001.jpg"},
        {"name": b"bbox_test/0002/x.jpg"},
    ]
    with pytest.raises(KeyError, match=r"record 1 \(x.jpg\)"):
        frames.record_labels(source, tmp_path)
    assert frames.record_labels(source[:1], tmp_path)["corruption"].tolist() == ["blur"]
