"""Inflated ResNets (AP3D / C3D / I3D / non-local, docs/models.md): init identity, ImageNet
import into the inflated layers, finite gradients in float32 and bfloat16, every fusion on top,
placement strings and presets, the AP3D configs."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from reid_jax.config_base import base_config, load_config_file
from reid_jax.fusion import FUSIONS
from reid_jax.models import inflated, pretrained
from reid_jax.models.reid import ReIDModel, make_model
from reid_jax.models.resnet import make_resnet
from reid_jax.train import state as state_lib

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
B, T, H, W = 2, 4, 64, 32
R18 = dict(arch="resnet18", width=8)
SMALL = (1, 2, 2, 1)  # a shallower basic-block trunk: the init tests compile faster
# AP3D's rule on ResNet-18: temporal layers in 2.0 and 3.0, non-local after 2.1 and 3.1.
AP3D_NL = dict(temporal="ap3d", temporal_blocks=((2, 0), (3, 0)), nonlocal_blocks=((2, 1), (3, 1)))
SMALL_AP3D_NL = (*AP3D_NL.items(), ("stage_sizes", (1, 2, 2, 1)))  # ReIDModel.backbone_kwargs


def _key():
    return jax.random.key(0, impl="unsafe_rbg")  # cheap to compile on CPU


def _frames(seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (B * T, H, W, 3))


def _is_added(path) -> bool:
    return pretrained.is_added(path)


@pytest.mark.parametrize(
    "fields",
    [
        AP3D_NL,
        dict(temporal="c3d", temporal_blocks=((2, 0), (3, 0))),
        dict(temporal="i3d", temporal_blocks=((2, 0), (3, 0))),
    ],
    ids=["ap3d_nl", "c3d", "i3d"],
)
def test_output_at_init_equals_plain_resnet(fields):
    """Zero temporal kernels, centre-only I3D kernels and zero-scale non-local BNs: at init the
    inflated backbone computes the 2-D ResNet's function (with the shared weights), in eval and
    in train mode (batch statistics)."""
    model = make_resnet(R18["arch"], width=8, stage_sizes=SMALL, **fields)
    plain = make_resnet(R18["arch"], width=8, stage_sizes=SMALL)
    x = _frames()
    variables = jax.jit(lambda k, x: model.init(k, x, train=False, seq_len=T))(_key(), x)
    flat = traverse_util.flatten_dict(variables)
    assert any(_is_added(p) for p in flat) or fields["temporal"] == "i3d"
    base = {p: v for p, v in flat.items() if not _is_added(p)}
    if fields["temporal"] == "i3d":  # the inflated kernel's centre frame is the 2-D kernel
        for block in ("layer2_0", "layer3_0"):
            path = ("params", block, "conv1", "kernel")
            kernel = np.asarray(flat[path])
            assert kernel.shape[0] == 3 and kernel.ndim == 5
            assert not kernel[0].any() and not kernel[2].any() and kernel[1].any()
            base[path] = kernel[1]
    base = traverse_util.unflatten_dict(base)
    modes = (False, True) if fields["temporal"] == "ap3d" else (False,)

    def run(v, pv, x):
        outs = []
        for train in modes:
            kw = {"mutable": ["batch_stats"]} if train else {}
            a = model.apply(v, x, train, T, **kw)
            p = plain.apply(pv, x, train, **kw)
            outs.append((a[0], p[0]) if train else (a, p))
        return outs

    with jax.default_matmul_precision("highest"):
        for got, want in jax.jit(run)(variables, base, x):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            assert float(jnp.max(jnp.abs(want))) > 0.1


def _torchvision_file(variables, path: Path) -> Path:
    """A torchvision-layout .safetensors state dict of a plain ResNet's variables."""
    tensors = {}
    for p, v in traverse_util.flatten_dict(variables).items():
        v = np.asarray(v)
        tensors[pretrained.torch_name(p)] = v.transpose(3, 2, 0, 1) if v.ndim == 4 else v
    pretrained.write_safetensors(path, tensors)
    return path


def test_imagenet_import_into_inflated_backbone(tmp_path):
    """A 2-D file loads into AP3D + NL + I3D layers as AP3D's ResNet.py inflates it: the I3D
    kernel gets the 2-D kernel at its centre frame; the temporal/non-local layers keep their
    init; the train state's backbone computes the file's 2-D ResNet; an orbax import dir too."""
    plain = make_resnet("resnet18", width=8, stage_sizes=SMALL)
    x = _frames(2)
    rng = np.random.default_rng(0)
    file_vars = jax.jit(lambda k, x: plain.init(k, x, train=False))(_key(), x)
    file_vars = jax.tree.map(  # random BN statistics too, so a mix-up would show
        lambda a: np.asarray(a) + 0.1 * rng.random(a.shape, np.float32), file_vars
    )
    path = _torchvision_file(file_vars, tmp_path / "r18.safetensors")
    model = ReIDModel(num_classes=5, backbone_kwargs=SMALL_AP3D_NL, **R18)
    state, _ = state_lib.create(
        _key(), model, optax.adam(1e-3), (B, T, H, W, 3), _replicated(), str(path)
    )
    got = traverse_util.flatten_dict({"params": state.params, "batch_stats": state.batch_stats})
    want = traverse_util.flatten_dict(file_vars)
    added = [p for p in got if _is_added(p)]
    assert len(added) == 2 * 5 + 2 * 12  # 2 AP3D residuals (5 arrays), 2 NL blocks (12)
    for p, v in got.items():
        if p[1] != "backbone":
            continue
        if p[-2:] in (("temporal_conv", "kernel"), ("W_bn", "scale"), ("W_bn", "bias")):
            assert not np.asarray(v).any(), p  # their zero init, kept
        elif _is_added(p) and p[-1] == "kernel":
            assert np.abs(np.asarray(v)).max() > 0, p  # random init (APM, NL convs), kept
        elif not _is_added(p):
            np.testing.assert_array_equal(v, want[(p[0], *p[2:])])
    backbone_vars = {
        "params": state.params["backbone"],
        "batch_stats": state.batch_stats["backbone"],
    }
    inflated_bb = make_resnet("resnet18", width=8, **dict(SMALL_AP3D_NL))

    def both(v, pv, x):
        return inflated_bb.apply(v, x, False, T), plain.apply(pv, x, False)

    with jax.default_matmul_precision("highest"):
        out, ref = jax.jit(both)(backbone_vars, file_vars, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)

    # I3D: the 2-D kernel at the centre frame, from a .safetensors file and an orbax dir.
    i3d = make_resnet("resnet18", width=8, stage_sizes=SMALL, temporal="i3d",
                      temporal_blocks=((3, 1),))  # fmt: skip
    expected = pretrained.abstract_variables(i3d)
    orbax_dir = pretrained.save_orbax(
        tmp_path / "orbax", file_vars, arch="resnet18", width=8, source="test"
    )
    for source in (path, orbax_dir):
        loaded = pretrained.load_variables(source, expected)
        kernel = loaded["params"]["layer3_1"]["conv1"]["kernel"]
        two_d = np.asarray(file_vars["params"]["layer3_1"]["conv1"]["kernel"])
        assert kernel.shape == (3, *two_d.shape)
        np.testing.assert_array_equal(kernel[1], two_d)
        assert not kernel[0].any() and not kernel[2].any()


def _replicated():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_gradients_finite_and_reach_the_new_layers(dtype):
    """Gradients through AP3D + NL in train mode (one block per stage, to compile fast) are
    finite, and non-zero for the zero-initialised temporal kernel and non-local BN scale (they
    can leave their init); the APM's only once the temporal kernel is non-zero."""
    model = make_resnet(
        "resnet18", width=8, stage_sizes=(1, 1, 1, 1), dtype=dtype, temporal="ap3d",
        temporal_blocks=((2, 0),), nonlocal_blocks=((2, 0),),
    )  # fmt: skip
    x = _frames(3)
    variables = model.init(_key(), x, train=False, seq_len=T)  # eager: no init compile
    cot = jax.random.normal(jax.random.key(4), (B * T, 4, 2, 64))

    def loss(params):
        out, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, True, T,
            mutable=["batch_stats"],
        )  # fmt: skip
        return jnp.sum(out.astype(jnp.float32) * cot)

    flat = traverse_util.flatten_dict(jax.jit(jax.grad(loss))(variables["params"]))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in flat.values())
    temporal = ("layer2_0", "conv1_temporal")  # a basic block's first 3x3 conv
    assert float(jnp.max(jnp.abs(flat[(*temporal, "temporal_conv", "kernel")]))) > 0
    assert float(jnp.max(jnp.abs(flat[("layer2_0_nonlocal", "W_bn", "scale")]))) > 0
    assert not flat[(*temporal, "apm", "semantic_mapping", "kernel")].any()


def test_every_fusion_composes_with_the_ap3d_nl_backbone():
    """Each fusion of reid_jax.fusion receives the inflated backbone's last maps (shapes only)."""
    clips = jax.ShapeDtypeStruct((B, T, H, W, 3), jnp.float32)
    for fusion in sorted(FUSIONS):
        model = ReIDModel(num_classes=5, fusion=fusion, backbone_kwargs=SMALL_AP3D_NL, **R18)
        variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), _key(), clips)
        assert "layer2_1_nonlocal" in variables["params"]["backbone"]
        (logits, aux), _ = jax.eval_shape(
            lambda v, x: model.apply(v, x, True, mutable=["batch_stats"]), variables, clips
        )
        assert logits.shape == (B, 5), fusion
        assert aux["features"].ndim == 2 and aux["features"].shape[0] == B, fusion


def test_placement_strings_and_presets():
    r50 = (3, 4, 6, 3)
    assert inflated.parse_placement(" 3.4, 2.0,2.2 ", r50, "k") == ((2, 0), (2, 2), (3, 4))
    assert inflated.parse_placement("", r50, "k") == ()
    # AP3D's ResNet.py: c3d_idx = [[],[0, 2],[0, 2, 4],[]], nl_idx = [[],[1, 3],[1, 3, 5],[]]
    assert inflated.preset("ap3d_nl", r50) == {
        "kind": "ap3d",
        "blocks": "2.0,2.2,3.0,3.2,3.4",
        "nonlocal_blocks": "2.1,2.3,3.1,3.3,3.5",
    }
    assert inflated.preset("c2d", r50) == {"kind": "none", "blocks": "", "nonlocal_blocks": ""}
    assert inflated.preset("ap3d", (2, 2, 2, 2))["blocks"] == "2.0,3.0"
    with pytest.raises(ValueError, match=r"k='2\.6': block 2\.6 does not exist"):
        inflated.parse_placement("2.6", r50, "k")
    with pytest.raises(ValueError, match=r"'2-0' is not 'stage\.block'"):
        inflated.parse_placement("2-0", r50, "k")
    with pytest.raises(ValueError, match="given twice"):
        inflated.parse_placement("2.0,2.0", r50, "k")
    with pytest.raises(ValueError, match="backbone preset 'p3d'"):
        inflated.preset("p3d", r50)


def test_config_errors_name_the_key():
    config = base_config().model
    assert make_model(config, 3).backbone_kwargs == ()  # default: today's plain ResNet
    config.temporal.kind = "ap3d"
    with pytest.raises(ValueError, match=r"temporal\.kind='ap3d' but config\.model\.temporal"):
        make_model(config, 3)
    config.temporal.kind, config.temporal.blocks = "p3d", "2.0"
    with pytest.raises(ValueError, match=r"config\.model\.temporal\.kind='p3d'"):
        make_model(config, 3)
    config.temporal.kind, config.temporal.time_dim = "c3d", 2
    with pytest.raises(ValueError, match=r"time_dim=2; expected an odd number"):
        make_model(config, 3)
    config.temporal.kind, config.temporal.blocks, config.temporal.time_dim = "none", "2.0", 3
    with pytest.raises(ValueError, match="but kind='none'"):
        make_model(config, 3)


@pytest.mark.parametrize(
    "name,nonlocal_blocks",
    [("mars_ap3d_r50.py", ()), ("mars_ap3d_nl_r50.py", ((2, 1), (2, 3), (3, 1), (3, 3), (3, 5)))],
)
def test_ap3d_configs_build_the_authors_placement(name, nonlocal_blocks):
    config = load_config_file(CONFIGS / name)
    fields = dict(make_model(config.model, 625).backbone_kwargs)
    assert fields["temporal"] == "ap3d"
    assert fields["temporal_blocks"] == ((2, 0), (2, 2), (3, 0), (3, 2), (3, 4))
    assert fields["nonlocal_blocks"] == nonlocal_blocks
    assert (fields["time_dim"], fields["temperature"], fields["contrastive_att"]) == (3, 4.0, True)
    c2d = load_config_file(CONFIGS / "mars_ap3d_c2d_r50.py")
    c2d.model.temporal = config.model.temporal  # the rest of the recipe is AP3D's C2D one
    assert c2d.to_dict() == config.to_dict()
    tiny = load_config_file(CONFIGS / name, "tiny")
    assert tiny.model.arch == "resnet18" and dict(make_model(tiny.model, 5).backbone_kwargs)
