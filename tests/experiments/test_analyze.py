"""Feature diagnostics on constructed features whose answers are known."""

import numpy as np
import pytest

from reid_jax.experiments import analyze


def _features(rng, n_ids=6, per_id=2, length=12, corrupt_every=4, gait=0.0):
    """Identity direction + optional gait rotation; every ``corrupt_every``-th frame random."""
    dim = 32
    ids = rng.standard_normal((n_ids, dim))
    feats, tracklet, frame, pid, camid, label, phase = [], [], [], [], [], [], []
    t = 0
    for i in range(n_ids):
        for c in range(per_id):
            for f in range(length):
                ph = (f / 8.0) % 1.0
                x = ids[i] + 0.05 * rng.standard_normal(dim)
                x[:2] += gait * 3 * np.array([np.cos(2 * np.pi * ph), np.sin(2 * np.pi * ph)])
                lab = "clean"
                if f % corrupt_every == corrupt_every - 1:
                    x, lab = rng.standard_normal(dim), "occlusion"
                feats.append(x / np.linalg.norm(x))
                (
                    tracklet.append(t),
                    frame.append(f),
                    pid.append(i + 1),
                    camid.append(c + 1),
                )
                label.append(lab), phase.append(ph)
            t += 1
    arr = [np.asarray(v) for v in (feats, tracklet, frame, pid, camid, label, phase)]
    return arr


def test_corrupted_frames_sit_far_from_the_centre():
    out = analyze.diagnostics(*_features(np.random.default_rng(0)))["centred"]
    c = out["cos_to_centre"]
    assert c["clean"]["mean"] > 0.8 > c["occlusion"]["mean"]
    assert out["cos_auc"]["occlusion"] == 1.0
    s = out["spread"]
    assert s["within_tracklet"] < s["same_id_cross_camera"] < s["between_ids"]
    w = out["window_convergence"]
    assert w["1"] < w["4"] < w["8"] <= 1.0 + 1e-9
    assert np.isnan(w["16"])  # no tracklet has 16 frames


def test_gait_rotation_shows_in_phase_difference():
    still = analyze.diagnostics(*_features(np.random.default_rng(1), gait=0.0))["raw"]["gait"]
    walk = analyze.diagnostics(*_features(np.random.default_rng(1), gait=1.0))["raw"]["gait"]
    # frames half a cycle apart are much less similar only when the feature follows the gait
    assert walk["cos_by_phase_diff"][0] - walk["cos_by_phase_diff"][-1] > 0.3
    assert abs(still["cos_by_phase_diff"][0] - still["cos_by_phase_diff"][-1]) < 0.05
    # periodic: lag 8 (one cycle) is as similar as lag 1, lag 4 (half a cycle) is not
    lag = walk["cos_by_lag"]
    assert lag[7] > lag[3] + 0.3


def test_auc_ties_and_empty():
    assert analyze._auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    assert analyze._auc(np.array([2.0, 3.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)
    assert np.isnan(analyze._auc(np.array([1.0]), np.array([])))


def test_spread_over_the_cycle_follows_where_the_feature_moves():
    # a feature that rotates with the gait phase leaves the tracklet centre at every phase
    rng = np.random.default_rng(2)
    feats, tracklet, frame, pid, camid, label, phase = _features(rng, gait=1.0, corrupt_every=99)
    out = analyze.diagnostics(feats, tracklet, frame, pid, camid, label, phase)["centred"]
    spread = out["gait"]["spread_by_phase"]
    assert len(spread) == analyze.CYCLE_BINS and all(s >= 0 for s in spread)
    still = analyze.diagnostics(*_features(np.random.default_rng(2), corrupt_every=99))
    assert min(spread) > max(still["centred"]["gait"]["spread_by_phase"])


def test_a_shared_offset_crowds_raw_cosines_and_centring_undoes_it():
    # post-ReLU pooled features share a large positive mean: every raw cosine is near 1
    feats, tracklet, frame, pid, camid, label, phase = _features(np.random.default_rng(3))
    shifted = feats + 20.0 / np.sqrt(feats.shape[1])  # an offset 20x a feature's norm
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    out = analyze.diagnostics(shifted, tracklet, frame, pid, camid, label, phase)
    raw, centred = out["raw"], out["centred"]
    assert raw["spread"]["between_ids"] < 0.01  # identities look alike to a raw cosine
    assert centred["spread"]["between_ids"] > 0.5
    assert raw["cos_to_centre"]["occlusion"]["mean"] > 0.99
    assert centred["cos_to_centre"]["occlusion"]["mean"] < 0.5
    # the ranking survives the offset; the size of the cosine differences does not
    assert raw["cos_auc"]["occlusion"] > 0.9 and centred["cos_auc"]["occlusion"] > 0.9
