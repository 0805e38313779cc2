"""cosine_center against the note's numbers and a numpy reference of every variant."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.fusion import cosine_center
from reid_jax.fusion.cosine import (
    ARCCOS_MARGIN,
    CosineCenterFusion,
    center_weights,
    floor_weight,
)
from reid_jax.fusion.cosine import __doc__ as cosine_doc


def _jit_cc(frames, **kwargs):
    """cosine_center under jit (options static)."""
    return jax.jit(functools.partial(cosine_center, **kwargs))(jnp.asarray(frames, jnp.float32))


def _np_cos(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return x @ c / (np.linalg.norm(x, axis=-1) * np.linalg.norm(c))


def _np_weights(x: np.ndarray, tau: float, weighting: str, iterations: int) -> np.ndarray:
    """Reference for one clip x [n, D] (float64)."""
    if weighting != "softmax":
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    center = x.mean(0)
    for _ in range(iterations + 1):
        s = _np_cos(x, center)
        logits = -np.arccos(np.clip(s, -1, 1)) / tau if weighting == "angle" else s / tau
        w = np.exp(logits - logits.max())
        w /= w.sum()
        center = w @ x
    return w


def test_the_notes_weight_floor_881_119():
    # f1 = (2, 0), f2 = (-1, 0): centre (0.5, 0), scores +1 and -1.
    frames = jnp.array([[[2.0, 0.0], [-1.0, 0.0]]])
    e = math.e
    for mode in ("flat", "pairwise"):
        fused, aux = _jit_cc(frames, tau=1.0, mode=mode)
        w = aux.get("frame_weights", aux["weights"])
        np.testing.assert_allclose(w[0], [e / (e + 1 / e), (1 / e) / (e + 1 / e)], rtol=1e-6)
        np.testing.assert_allclose(w[0], [0.8808, 0.1192], atol=1e-4)
        np.testing.assert_allclose(fused[0], 0.8808 * np.array([2, 0]) + 0.1192 * np.array([-1, 0]),
                                   atol=1e-3)  # fmt: skip
    assert floor_weight(2, 1.0) == pytest.approx(0.1192, abs=1e-4)
    for tau in (0.25, 0.5, 2.0):  # tau moves the floor: 1 / (1 + exp(2 / tau)) for two scores
        w = jax.jit(center_weights)(frames, tau)[0]
        np.testing.assert_allclose(w[1], floor_weight(2, tau), rtol=1e-5)
        np.testing.assert_allclose(w[1], 1 / (1 + math.exp(2 / tau)), rtol=1e-5)


@pytest.mark.parametrize("weighting", ["softmax", "angle", "vmf"])
@pytest.mark.parametrize("iterations", [0, 2])
def test_flat_weights_match_numpy_reference(weighting, iterations):
    x = np.random.default_rng(0).normal(size=(3, 5, 7))
    x[0, 2] *= 5.0  # a large-norm frame: the raw centre and the mean direction differ
    tau = 0.4
    _, aux = _jit_cc(x, tau=tau, mode="flat", weighting=weighting, iterations=iterations)
    for b in range(3):
        np.testing.assert_allclose(
            aux["weights"][b], _np_weights(x[b], tau, weighting, iterations), rtol=2e-5
        )


def test_sphere_centre_ignores_norms_raw_centre_does_not():
    x = np.random.default_rng(1).normal(size=(1, 4, 6)).astype(np.float32)
    scaled = x.copy()
    scaled[0, 0] *= 10.0
    for weighting, invariant in (("softmax", False), ("angle", True), ("vmf", True)):
        weigh = jax.jit(functools.partial(center_weights, tau=0.5, weighting=weighting))
        w1, w2 = weigh(jnp.asarray(x)), weigh(jnp.asarray(scaled))
        assert np.allclose(w1, w2, rtol=1e-5) == invariant, weighting


def test_pairwise_tree_levels_and_frame_weights():
    x = np.random.default_rng(2).normal(size=(2, 4, 3))
    fused, aux = _jit_cc(x, tau=0.7, mode="pairwise")
    w0, w1 = (np.asarray(lvl) for lvl in aux["weights"])
    for b in range(2):  # reference: (0,1) and (2,3), then the two results
        p = _np_weights(x[b, 0:2], 0.7, "softmax", 0)
        q = _np_weights(x[b, 2:4], 0.7, "softmax", 0)
        g = np.stack([p @ x[b, 0:2], q @ x[b, 2:4]])
        r = _np_weights(g, 0.7, "softmax", 0)
        np.testing.assert_allclose(w0[b], [p, q], rtol=1e-5)
        np.testing.assert_allclose(w1[b, 0], r, rtol=1e-5)
        np.testing.assert_allclose(fused[b], r @ g, rtol=1e-5, atol=1e-6)
        frame = np.concatenate([r[0] * p, r[1] * q])
        np.testing.assert_allclose(aux["frame_weights"][b], frame, rtol=1e-5)
        np.testing.assert_allclose(fused[b], frame @ x[b], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t,levels", [(3, [1, 1]), (5, [2, 1, 1]), (1, [])])
def test_pairwise_with_t_not_a_power_of_two_carries_the_odd_frame(t, levels):
    x = np.random.default_rng(3).normal(size=(1, t, 4))
    fused, aux = _jit_cc(x, mode="pairwise")
    assert [lvl.shape[1] for lvl in aux["weights"]] == levels
    fw = np.asarray(aux["frame_weights"][0])
    np.testing.assert_allclose(fw.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(fused[0], fw @ x[0], rtol=1e-5, atol=1e-6)
    if t == 3:  # (0,1) -> g, then (g, 2): frame 2's weight is its last-level weight
        np.testing.assert_allclose(fw[2], aux["weights"][1][0, 0, 1], rtol=1e-6)


def test_learned_tau_is_one_parameter_with_a_gradient():
    module = CosineCenterFusion(tau=0.5, learn_tau=True, mode="flat")
    maps = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 2, 2, 5)), jnp.float32)
    key = jax.random.key(1, impl="unsafe_rbg")
    variables = jax.jit(lambda k, x: module.init(k, x, False))(key, maps)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"log_tau": ()}}
    np.testing.assert_allclose(variables["params"]["log_tau"], math.log(0.5), rtol=1e-6)

    def entropy(v):
        w = module.apply(v, maps, False)[1]["weights"]
        return -jnp.sum(w * jnp.log(w))

    grad = jax.jit(jax.grad(entropy))(variables)["params"]["log_tau"]
    assert np.isfinite(grad) and grad > 0  # a larger tau flattens the weights


def test_pairwise_cosines_to_a_pair_centre_differ_only_through_the_norms():
    # cos(a, a+b) - cos(b, a+b) = (|a| - |b|)(1 - cos(a, b)) / |a+b|: two frames of equal norm
    # get exactly 1/2 each, however different they are; later levels weigh pair means only by
    # how their norms differ (docs/fusion.md).
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4, 16))
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    for weighting in ("softmax", "angle", "vmf"):
        _, aux = _jit_cc(unit, mode="pairwise", tau=0.05, weighting=weighting)
        np.testing.assert_allclose(aux["weights"][0], 0.5, atol=1e-5)  # the first level
        _, two = _jit_cc(unit[:, :2], mode="pairwise", tau=0.05, weighting=weighting)
        np.testing.assert_allclose(two["frame_weights"], 0.5, atol=1e-5)
        _, flat = _jit_cc(unit, mode="flat", tau=0.05, weighting=weighting)
        assert np.ptp(np.asarray(flat["weights"]), axis=1).min() > 0.01  # flat mode does weigh
    # on the circle, every level compares two unit vectors: pairwise = averaging, any norms
    for weighting in ("angle", "vmf"):
        _, aux = _jit_cc(
            x * np.array([1.0, 3.0, 0.5, 2.0])[:, None],
            mode="pairwise",
            tau=0.05,
            weighting=weighting,
        )
        np.testing.assert_allclose(aux["frame_weights"], 0.25, atol=1e-5)
    a, b = x[0, 0], x[0, 1]
    c = a + b
    diff = _np_cos(a[None], c)[0] - _np_cos(b[None], c)[0]
    expected = (np.linalg.norm(a) - np.linalg.norm(b)) * (1 - _np_cos(a[None], b)[0])
    assert diff == pytest.approx(expected / np.linalg.norm(c), rel=1e-9)


def test_documented_floor_values():
    # the module docstring's floors for two scores at tau = 0.5 / 0.25 / 0.1, and the angle one
    assert floor_weight(2, 0.5) == pytest.approx(0.018, abs=5e-4)
    assert floor_weight(2, 0.25) == pytest.approx(3.4e-4, rel=0.02)
    assert floor_weight(2, 0.1) == pytest.approx(2.1e-9, rel=0.02)
    frames = jnp.array([[[1.0, 0.0], [-1.0, 0.0], [2.0, 0.0]]])  # angles 0 and pi to the centre
    w = jax.jit(functools.partial(center_weights, tau=1.0, weighting="angle"))(frames[:, :2])
    # centre of (1,0), (-1,0) on the circle is 0: both score -arccos(0) -> equal weights
    np.testing.assert_allclose(w, 0.5, rtol=1e-6)
    w = jax.jit(functools.partial(center_weights, tau=1.0, weighting="angle"))(frames)
    # centre (1/3, 0): frames 0 and 2 at angle 0, frame 1 at angle pi
    # (arccos sees scores clipped 1e-6 inside [-1, 1]: the angles are 1.4e-3 off 0 and pi)
    gap = math.pi - 2 * math.acos(1 - ARCCOS_MARGIN)
    np.testing.assert_allclose(w[0, 1], 1 / (1 + 2 * math.exp(gap)), rtol=1e-4)
    # the docstring's two-frame angle floor at tau = 1 is what its formula gives
    floor = 1 / (1 + math.exp(math.pi))
    assert f"1 / (1 + exp(pi / tau)) = {floor:.3f} at tau = 1" in " ".join(cosine_doc.split())


@pytest.mark.parametrize("t", [1, 3, 5, 6])
@pytest.mark.parametrize("mode", ["flat", "pairwise"])
def test_large_tau_is_exactly_averaging_for_every_t(t, mode):
    x = np.random.default_rng(t).normal(size=(2, t, 6)) * np.linspace(0.5, 3, t)[:, None]
    for weighting in ("softmax", "angle", "vmf"):
        fused, aux = _jit_cc(x, tau=1e7, mode=mode, weighting=weighting)
        w = aux.get("frame_weights", aux["weights"])
        np.testing.assert_allclose(w, 1.0 / t, atol=1e-6)
        np.testing.assert_allclose(fused, x.mean(1), rtol=1e-5, atol=1e-5)


def test_odd_t_weighs_each_node_by_the_frames_it_holds():
    x = np.random.default_rng(7).normal(size=(1, 5, 8))
    tau = 0.3
    _, aux = _jit_cc(x, tau=tau, mode="pairwise")
    w0, w1, w2 = (np.asarray(lvl)[0] for lvl in aux["weights"])
    # T=5: (0,1), (2,3) | (01, 23) | (0123 holding 4 frames, frame 4 holding 1)
    p = _np_weights(x[0, 0:2], tau, "softmax", 0)
    q = _np_weights(x[0, 2:4], tau, "softmax", 0)
    g = np.stack([p @ x[0, 0:2], q @ x[0, 2:4]])
    r = _np_weights(g, tau, "softmax", 0)
    top = np.stack([r @ g, x[0, 4]])
    s = _np_cos(top, top.mean(0)) / tau + np.log([4.0, 1.0])
    last = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    np.testing.assert_allclose(w2[0], last, rtol=1e-5)
    frame = np.concatenate([last[0] * r[0] * p, last[0] * r[1] * q, [last[1]]])
    np.testing.assert_allclose(aux["frame_weights"][0], frame, rtol=1e-5)
    # floor of an uneven pair: n_a / (n_a + n_b exp(2 / tau)) for scores -1 (a) and +1 (b)
    pair = jnp.array([[[-1.0, 0.0], [2.0, 0.0]]])
    w = jax.jit(center_weights)(pair, 1.0, counts=np.array([3.0, 1.0]))
    np.testing.assert_allclose(w[0, 0], 3 / (3 + math.exp(2.0)), rtol=1e-5)


@pytest.mark.parametrize("t", [3, 5, 6])
def test_on_the_circle_pairwise_is_averaging_for_every_t(t):
    x = np.random.default_rng(t).normal(size=(3, t, 16)) * np.linspace(0.3, 4, t)[:, None]
    for weighting in ("angle", "vmf"):
        _, aux = _jit_cc(x, mode="pairwise", tau=0.05, weighting=weighting)
        np.testing.assert_allclose(aux["frame_weights"], 1.0 / t, atol=1e-5)


def test_a_zero_frame_scores_zero_and_its_gradient_stays_bounded():
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(1, 4, 16))).astype(np.float32)
    zero = x.copy()
    zero[0, 1] = 0.0
    # the zero frame scores 0 against a pair partner that scores 1 (on the circle: the
    # exception to "pairwise = averaging"): weights 1 / (1 + e^(1/tau)) and the rest
    _, aux = _jit_cc(zero[:, :2], mode="pairwise", tau=0.5, weighting="vmf")
    np.testing.assert_allclose(aux["frame_weights"][0, 1], 1 / (1 + math.exp(2.0)), rtol=1e-5)
    probe = jnp.arange(16.0)
    cases = [(m, w) for m in ("flat", "pairwise") for w in ("softmax", "angle", "vmf")]

    @jax.jit
    def grads(v):  # every case's input gradient, one compilation
        def loss(v, mode, weighting):
            return jnp.sum(cosine_center(v, tau=0.1, mode=mode, weighting=weighting)[0] * probe)

        return [jax.grad(loss)(v, m, w) for m, w in cases]

    for case, g, g_zero in zip(cases, grads(jnp.asarray(x)), grads(jnp.asarray(zero))):
        at_zero = np.asarray(g_zero)
        assert np.all(np.isfinite(at_zero)), case
        # a bare eps floor gave 2e3-3e9x here; the relative floor bounds it near 1/REL_FLOOR
        assert np.abs(at_zero).max() < 200 * float(jnp.abs(g).max()), case

    @jax.jit
    def grads_at_zero(v):
        return [jax.grad(lambda v, w=w: cosine_center(v, weighting=w)[0].sum())(v)
                for w in ("softmax", "angle", "vmf")]  # fmt: skip

    for g in grads_at_zero(jnp.zeros((1, 4, 16))):
        assert np.all(np.isfinite(g))
