"""ReIDModel with a ViT backbone: every fusion composes with CLS vectors and patch maps, finite
gradients in float32 and bfloat16, pretrained weights through the train state, layer-wise lr
decay (against timm's param_groups_layer_decay), and the recipe's tiny smoke run."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from reid_jax.config_base import base_config, load_config_file
from reid_jax.fusion import FUSIONS
from reid_jax.models import vit_import
from reid_jax.models.pretrained import write_safetensors
from reid_jax.models.reid import make_model
from reid_jax.train import optim
from reid_jax.train import state as state_lib

CLIPS = jax.ShapeDtypeStruct((2, 4, 64, 32, 3), jnp.float32)


def _model_config(tokens="cls", fusion="mean", dtype="float32", arch="vit_b16"):
    c = base_config().model
    c.arch, c.fusion, c.dtype = arch, fusion, dtype
    c.vit.width, c.vit.depth, c.vit.heads, c.vit.tokens = 32, 3, 2, tokens
    return c


def _shapes(model) -> dict:
    """Abstract variables of ``model`` for CLIPS (no compile)."""
    return jax.eval_shape(lambda k, x: model.init(k, x, False), jax.random.key(0), CLIPS)


@pytest.mark.parametrize("tokens, grid", [("cls", (1, 1)), ("patches", (4, 2))])
def test_every_fusion_composes_with_cls_vectors_and_patch_maps(tokens, grid):
    for fusion in sorted(FUSIONS):
        model = make_model(_model_config(tokens, fusion), num_classes=7)
        variables = _shapes(model)
        (logits, aux), _ = jax.eval_shape(
            lambda v, x, m=model: m.apply(v, x, True, mutable=["batch_stats"]), variables, CLIPS
        )
        assert logits.shape == (2, 7), fusion
        assert aux["features"].shape[0] == 2 and aux["bn_features"].shape == aux["features"].shape
        assert "backbone" not in variables.get("batch_stats", {})  # a ViT has no BatchNorm
    if tokens == "patches":  # map-level fusions see the [h, w] patch grid
        model = make_model(_model_config(tokens, "temporal_attention"), num_classes=7)
        shapes = _shapes(model)["params"]
        assert shapes["fusion"]["spatial_kernel"].shape[:2] == grid


def test_finite_gradients_float32_and_bfloat16():
    x = jax.random.normal(jax.random.key(1), (2, 2, 32, 16, 3))  # a 2x1 patch grid
    labels = jnp.array([0, 1])
    grads = {}
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(
        lambda k: make_model(_model_config("patches"), 3).init(k, x, False), jax.random.key(0)
    )
    variables = jax.tree.map(lambda a: (0.1 * rng.normal(size=a.shape)).astype("f4"), shapes)
    variables["batch_stats"] = jax.tree.map(np.abs, variables["batch_stats"])  # variances > 0
    for dtype in ("float32", "bfloat16"):  # the same float32 params, computed in each dtype
        model = make_model(_model_config("patches", "mean", dtype), num_classes=3)

        def loss(params, model=model, variables=variables):
            v = {**variables, "params": params}
            (logits, aux), _ = model.apply(v, x, True, mutable=["batch_stats"])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return ce + jnp.mean(aux["features"] ** 2)

        grads[dtype] = jax.jit(jax.grad(loss))(variables["params"])
        leaves = jax.tree.leaves(grads[dtype])
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves), dtype
        block = grads[dtype]["backbone"]["blocks_0"]["attn"]["qkv"]["kernel"]
        assert float(jnp.max(jnp.abs(block))) > 0, dtype
    a = np.asarray(grads["float32"]["backbone"]["blocks_2"]["mlp"]["fc2"]["kernel"])
    b = np.asarray(grads["bfloat16"]["backbone"]["blocks_2"]["mlp"]["fc2"]["kernel"], np.float32)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.1  # bfloat16 tracks float32


def test_layer_decay_scales_match_timm_param_groups(refs):
    """timm's BEiT-style groups (stem 0, block i and the final norm after the last one i+1, head
    L+1) on its own ViT give the same lr scale per tensor as ours on the same-shaped ViT."""
    timm, _ = refs
    from timm.optim import param_groups_layer_decay

    ref = timm.create_model(
        "vit_base_patch16_224", pretrained=False, depth=3, embed_dim=32, num_heads=2
    )
    want = {}
    for group in param_groups_layer_decay(ref, layer_decay=0.5, weight_decay=0.0):
        for p in group["params"]:
            want[id(p)] = group["lr_scale"]
    want = {name: want[id(p)] for name, p in ref.named_parameters()}
    model = make_model(_model_config(), num_classes=7)
    params = _shapes(model)["params"]
    scales = optim.layer_decay_scales(params, 0.5)
    flat = jax.tree_util.tree_leaves_with_path(scales)
    checked = 0
    for path, scale in flat:
        names = tuple(str(k.key) for k in path)
        if names[0] == "backbone":
            assert scale == pytest.approx(want[vit_import.torch_name(names[1:], "timm")]), names
            checked += 1
        else:  # fusion, BNNeck, classifier: the full lr, as timm's head
            assert scale == want["head.weight"] == 1.0
    assert checked == len([n for n in want if not n.startswith("head.")])


def test_layer_decay_scales_the_first_adam_step():
    """Adam's first step is -lr * sign(g): with layer decay d each block's step is lr * d^(L-i)."""
    model = make_model(_model_config(), num_classes=7)
    params = jax.tree.map(lambda s: jnp.ones(s.shape), _shapes(model))["params"]
    cfg = base_config().optim
    cfg.lr, cfg.weight_decay, cfg.schedule, cfg.layer_decay = 1e-3, 0.0, "constant", 0.5
    tx = optim.make_optimizer(cfg, steps_per_epoch=10)
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    step = lambda t: float(jnp.mean(-t) / 1e-3)  # noqa: E731
    b = updates["backbone"]
    approx = functools.partial(pytest.approx, rel=1e-4)  # Adam's eps and float32 rounding
    assert step(b["blocks_2"]["mlp"]["fc1"]["kernel"]) == approx(0.5)
    assert step(b["blocks_0"]["attn"]["qkv"]["bias"]) == approx(0.5**3)
    assert step(b["pos_embed"]) == approx(0.5**4)
    assert step(b["norm"]["scale"]) == approx(0.5)  # with the last block, as timm
    assert step(updates["classifier"]["kernel"]) == approx(1.0)
    resnet = base_config().model
    resnet.arch, resnet.width = "resnet18", 4
    r_params = _shapes(make_model(resnet, 7))
    with pytest.raises(ValueError, match="layer_decay=0.5 needs a ViT backbone"):
        tx.init(r_params["params"])


def _clip_file(path, width: int, depth: int) -> dict[str, np.ndarray]:
    """A random 224x224 (14x14 grid) CLIP-layout ViT as ``path`` (.safetensors); returns it."""
    vit = vit_import.make_vit("clip_vit_b16", width=width, depth=depth, heads=2)
    rng = np.random.default_rng(0)
    flat = {}
    for p, leaf in jax.tree_util.tree_leaves_with_path(vit_import.abstract_params(vit, (224, 224))):
        names = tuple(str(k.key) for k in p)
        shape = vit_import._torch_shape(names, leaf.shape, "clip")
        flat["visual." + vit_import.torch_name(names, "clip")] = rng.normal(size=shape).astype("f4")
    write_safetensors(path, flat)
    return flat


def test_pretrained_vit_loads_into_the_train_state_with_a_resized_grid(tmp_path):
    """A 224x224 CLIP-layout file (14x14 grid) into a ReIDModel at 64x32 (4x2 grid)."""
    flat = _clip_file(tmp_path / "clip.safetensors", 32, 3)
    cfg = _model_config(arch="clip_vit_b16")
    cfg.vit.pos_interpolation = "bilinear"
    model = make_model(cfg, num_classes=5)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state, _ = state_lib.create(
        jax.random.key(0), model, optax.sgd(0.1), CLIPS.shape, sharding,
        str(tmp_path / "clip.safetensors"),
    )  # fmt: skip
    got = state.params["backbone"]
    pos = flat["visual.positional_embedding"]
    want = vit_import.resize_pos_embed(pos, (14, 14), (4, 2), "bilinear")
    np.testing.assert_allclose(got["pos_embed"], want, rtol=1e-6)
    np.testing.assert_array_equal(got["norm_pre"]["scale"], flat["visual.ln_pre.weight"])
    assert "backbone" not in state.batch_stats


def test_bad_vit_options_name_the_key():
    cfg = _model_config()
    cfg.vit.tokens = "both"
    with pytest.raises(ValueError, match="config.model.vit.tokens='both'"):
        make_model(cfg, 3)
    cfg = _model_config()
    cfg.vit.pos_interpolation = "nearest"
    with pytest.raises(ValueError, match="config.model.vit.pos_interpolation='nearest'"):
        make_model(cfg, 3)


def test_recipe_tiny_variant_trains_from_a_clip_file(tmp_path):
    from reid_jax.jobs.training import read_jsonl, train_and_evaluate

    full = load_config_file("configs/mars_vit_b16_clip.py")
    assert (full.model.arch, full.data.height, full.data.width) == ("clip_vit_b16", 256, 128)
    cfg = load_config_file("configs/mars_vit_b16_clip.py", "tiny")
    cfg.data.raw_dir, cfg.data.data_dir = str(tmp_path / "raw"), str(tmp_path / "tfds")
    _clip_file(tmp_path / "clip.safetensors", cfg.model.vit.width, cfg.model.vit.depth)
    cfg.model.pretrained = str(tmp_path / "clip.safetensors")
    out = train_and_evaluate(cfg, tmp_path / "run")
    (final,) = out["history"]
    assert final["step"] == 2 and 0.0 <= final["retrieval/official/mAP"] <= 1.0
    rows = read_jsonl(tmp_path / "run" / "train_metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["loss"]) for r in rows)
