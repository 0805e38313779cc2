"""Tests for ReIDModel (backbone + fusion + BNNeck) and the fusion registry."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from reid_jax.config_base import base_config
from reid_jax.fusion import FUSIONS, TemporalAvgPool, TemporalMaxPool, make_fusion
from reid_jax.models.reid import ReIDModel, make_model
from reid_jax.models.resnet import make_resnet

B, T, H, W, NUM_CLASSES = 2, 3, 32, 16, 5


def _init(model, x):
    """Real init, jitted with a cheap-to-compile PRNG (threefry init compiles slowly on CPU)."""
    key = jax.random.key(0, impl="unsafe_rbg")
    return jax.jit(lambda k, x: model.init(k, x, train=False))(key, x)


@pytest.fixture(scope="module")
def tiny():
    """resnet18 width 8, 3-frame 32x16 clips, mean fusion."""
    model = ReIDModel(num_classes=NUM_CLASSES, arch="resnet18", width=8)
    clips = jax.random.normal(jax.random.key(1), (B, T, H, W, 3))
    return model, _init(model, clips), clips


def test_shapes_and_bnneck_structure(tiny):
    model, variables, clips = tiny
    logits, aux = model.apply(variables, clips, train=False)
    assert logits.shape == (B, NUM_CLASSES) and logits.dtype == jnp.float32
    assert aux["features"].shape == (B, 64) and aux["bn_features"].shape == (B, 64)
    np.testing.assert_allclose(aux["weights"], np.full((B, T), 1 / 3), rtol=1e-6)
    params = variables["params"]
    assert set(params) == {"backbone", "bnneck", "classifier"}
    assert set(params["bnneck"]) == {"scale"}  # BNNeck shift frozen at zero
    assert set(params["classifier"]) == {"kernel"}  # bias-free classifier
    std = float(np.std(params["classifier"]["kernel"]))
    assert 0.0005 < std < 0.002
    # Eval BNNeck with fresh stats (mean 0, var 1, scale 1) is x / sqrt(1 + eps).
    np.testing.assert_allclose(
        aux["bn_features"], aux["features"] / np.sqrt(1 + 1e-5), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        logits, aux["bn_features"] @ params["classifier"]["kernel"], rtol=1e-4, atol=1e-7
    )


def test_mean_fusion_equals_per_frame_gap_average(tiny):
    model, variables, clips = tiny
    _, aux = model.apply(variables, clips, train=False)
    backbone = make_resnet("resnet18", width=8, last_stride=1)
    bb_vars = {k: v["backbone"] for k, v in variables.items()}
    for b in range(B):
        maps = backbone.apply(bb_vars, clips[b], train=False)  # [T,h,w,C]
        expected = np.mean(np.asarray(maps), axis=(0, 1, 2))
        np.testing.assert_allclose(aux["features"][b], expected, rtol=1e-4, atol=1e-6)


def test_permutation_invariance_over_time(tiny):
    model, variables, clips = tiny
    _, aux = model.apply(variables, clips, train=False)
    _, aux_perm = model.apply(variables, clips[:, ::-1], train=False)
    np.testing.assert_allclose(aux["features"], aux_perm["features"], rtol=1e-5, atol=1e-6)


def test_batch_stats_update_only_in_train(tiny):
    model, variables, clips = tiny
    (_, aux), updates = model.apply(variables, clips, train=True, mutable=["batch_stats"])
    new_mean = updates["batch_stats"]["bnneck"]["mean"]
    np.testing.assert_allclose(new_mean, 0.1 * aux["features"].mean(0), rtol=1e-4, atol=1e-7)
    assert not np.allclose(
        updates["batch_stats"]["backbone"]["bn1"]["mean"],
        variables["batch_stats"]["backbone"]["bn1"]["mean"],
    )
    (_, _), same = model.apply(variables, clips, train=False, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, same["batch_stats"], variables["batch_stats"])


def test_bfloat16_model_returns_float32(tiny):
    _, variables, clips = tiny
    model16 = ReIDModel(num_classes=NUM_CLASSES, arch="resnet18", width=8, dtype=jnp.bfloat16)
    logits, aux = model16.apply(variables, clips, train=False)
    assert logits.dtype == jnp.float32
    assert aux["features"].dtype == jnp.float32 and aux["bn_features"].dtype == jnp.float32
    _, aux32 = tiny[0].apply(variables, clips, train=False)
    err = np.linalg.norm(aux["features"] - aux32["features"]) / np.linalg.norm(aux32["features"])
    assert 0 < err < 0.05  # bf16 compute happened (not bit-identical) but stays close


def test_jitted_forward_backward_has_finite_grads(tiny):
    model, variables, clips = tiny
    labels = jnp.array([0, 3])

    @jax.jit
    def loss_and_grads(params, batch_stats):
        def loss_fn(p):
            v = {"params": p, "batch_stats": batch_stats}
            (logits, aux), upd = model.apply(v, clips, train=True, mutable=["batch_stats"])
            log_probs = jax.nn.log_softmax(logits)
            ce = -jnp.mean(log_probs[jnp.arange(B), labels])
            return ce + jnp.mean(aux["features"] ** 2), upd

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, _), grads = loss_and_grads(variables["params"], variables["batch_stats"])
    assert np.isfinite(float(loss))
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.abs(grads["classifier"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads["backbone"]["conv1"]["kernel"]).max()) > 0


def test_make_model_reads_config():
    cfg = base_config().model
    cfg.update(
        {"arch": "resnet50", "width": 8, "last_stride": 2, "fusion": "max", "dtype": "bfloat16",
         "spatial_pool": "max"}
    )  # fmt: skip
    model = make_model(cfg, num_classes=7)
    assert (model.arch, model.width, model.last_stride, model.fusion) == ("resnet50", 8, 2, "max")
    assert model.dtype == jnp.bfloat16 and model.num_classes == 7 and model.fusion_kwargs == ()
    assert model.spatial_pool == "max"
    cases = [("arch", "vgg16"), ("fusion", "nope"), ("dtype", "float16"), ("spatial_pool", "sum")]
    for key, bad in cases:
        broken = ml_collections.ConfigDict(cfg.to_dict())
        broken[key] = bad
        with pytest.raises(ValueError, match=key):
            make_model(broken, num_classes=7)
    missing = ml_collections.ConfigDict({"arch": "resnet18", "width": 8})
    with pytest.raises(ValueError, match="last_stride"):
        make_model(missing, num_classes=7)


def test_fusion_registry_and_pooling_values():
    assert FUSIONS["mean"] is TemporalAvgPool and FUSIONS["max"] is TemporalMaxPool
    with pytest.raises(ValueError, match="mean"):
        make_fusion("attention-that-does-not-exist")
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(2, 4, 3, 2, 5)).astype(np.float32)
    gap = maps.mean(axis=(2, 3))  # [B,T,C]
    fused, aux = make_fusion("mean").apply({}, jnp.asarray(maps, jnp.bfloat16), train=True)
    assert fused.dtype == jnp.float32
    np.testing.assert_allclose(fused, gap.mean(1), atol=0.03)
    fused, aux = make_fusion("max").apply({}, jnp.asarray(maps), train=False)
    np.testing.assert_allclose(fused, gap.max(1), rtol=1e-6)
    winners = np.stack([np.bincount(gap[b].argmax(0), minlength=4) / 5 for b in range(2)])
    np.testing.assert_allclose(aux["weights"], winners)
    np.testing.assert_allclose(aux["weights"].sum(1), 1.0, rtol=1e-6)


def test_spatial_max_pool_equals_per_frame_max_then_mean(tiny):
    """spatial_pool="max" with the mean fusion: the time average of each frame map's spatial max
    (AP3D's ``F.max_pool2d(x, x.size()[2:])`` then ``x.mean(1)``)."""
    model, variables, clips = tiny
    pooled = ReIDModel(num_classes=NUM_CLASSES, arch="resnet18", width=8, spatial_pool="max")
    _, aux = pooled.apply(variables, clips, train=False)
    b, t = clips.shape[:2]
    backbone = make_resnet("resnet18", width=8, last_stride=1)
    maps = backbone.apply(
        {"params": variables["params"]["backbone"],
         "batch_stats": variables["batch_stats"]["backbone"]},
        clips.reshape((b * t, *clips.shape[2:])), False,
    )  # fmt: skip
    expected = maps.max(axis=(1, 2)).reshape(b, t, -1).mean(axis=1)
    np.testing.assert_allclose(aux["features"], expected, rtol=1e-5, atol=1e-6)
    _, avg_aux = model.apply(variables, clips, train=False)
    assert not np.allclose(aux["features"], avg_aux["features"], atol=1e-3)
