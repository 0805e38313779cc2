"""Tests for the Linen ResNet backbones: shapes, torchvision parameter counts/names, dtype, BN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.models.resnet import RESNETS, make_resnet, out_channels


def _shapes(model, x_shape):
    """Abstract (shape-only) init and forward, so large models cost only tracing."""
    x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
    variables = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return variables, out


def _init(model, x):
    """Real init, jitted with a cheap-to-compile PRNG (threefry init compiles slowly on CPU)."""
    key = jax.random.key(0, impl="unsafe_rbg")
    return jax.jit(lambda k, x: model.init(k, x, train=False))(key, x)


def _count(tree) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


@pytest.mark.parametrize(
    "arch,width,last_stride,expected",
    [
        ("resnet18", 16, 1, (2, 8, 4, 128)),
        ("resnet10", 16, 1, (2, 8, 4, 128)),
        ("resnet18", 16, 2, (2, 4, 2, 128)),
        ("resnet50", 8, 1, (2, 8, 4, 256)),
        ("resnet50", 8, 2, (2, 4, 2, 256)),
    ],
)
def test_output_shape_128x64(arch, width, last_stride, expected):
    model = RESNETS[arch](width=width, last_stride=last_stride)
    _, out = _shapes(model, (2, 128, 64, 3))
    assert out.shape == expected
    assert out_channels(arch, width) == expected[-1]


@pytest.mark.parametrize(
    "arch,expected",
    [
        ("resnet18", 11_689_512 - 513_000),  # torchvision total minus fc (512*1000 + 1000)
        # ResNet-18 without each stage's second block (two 3x3 C->C convs, two BatchNorms):
        # 11,176,512 - sum over C = 64..512 of (18 C^2 + 4 C) = 11,176,512 - 6,270,720
        ("resnet10", 4_905_792),
        ("resnet50", 25_557_032 - 2_049_000),  # minus fc (2048*1000 + 1000)
    ],
)
def test_parameter_count_matches_torchvision_without_fc(arch, expected):
    variables, _ = _shapes(RESNETS[arch](), (1, 64, 32, 3))
    assert _count(variables["params"]) == expected
    assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32


def test_names_follow_torchvision_state_dict():
    variables, _ = _shapes(RESNETS["resnet50"](width=8), (1, 64, 32, 3))
    params, stats = variables["params"], variables["batch_stats"]
    blocks = [f"layer{i}_{j}" for i, n in zip(range(1, 5), (3, 4, 6, 3)) for j in range(n)]
    assert set(params) == {"conv1", "bn1", *blocks}
    assert set(params["layer1_0"]) == {
        "conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample_conv", "downsample_bn"
    }
    assert "downsample_conv" not in params["layer1_1"]
    assert set(params["layer1_0"]["bn1"]) == {"scale", "bias"}
    assert set(stats["layer1_0"]["downsample_bn"]) == {"mean", "var"}
    # torchvision conv weight [O, I, kh, kw] is stored here as kernel [kh, kw, I, O].
    assert params["conv1"]["kernel"].shape == (7, 7, 3, 8)
    # v1.5: stride sits on the 3x3 conv; conv1 of a bottleneck is 1x1.
    assert params["layer2_0"]["conv1"]["kernel"].shape == (1, 1, 32, 16)
    assert params["layer2_0"]["conv2"]["kernel"].shape == (3, 3, 16, 16)
    r18, _ = _shapes(RESNETS["resnet18"](width=8), (1, 64, 32, 3))
    assert "downsample_conv" not in r18["params"]["layer1_0"]
    assert set(r18["params"]["layer2_0"]) == {
        "conv1", "bn1", "conv2", "bn2", "downsample_conv", "downsample_bn"
    }


@pytest.fixture(scope="module")
def tiny():
    """resnet18 width 4 on 32x16 inputs with real (random) weights."""
    model = RESNETS["resnet18"](width=4)
    x = jax.random.normal(jax.random.key(1), (3, 32, 16, 3))
    return model, _init(model, x), x


def test_stem_uses_torch_symmetric_padding(tiny):
    model, variables, x = tiny
    _, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=[])
    stem = state["intermediates"]["conv1"]["__call__"][0]
    expected = jax.lax.conv_general_dilated(
        x,
        variables["params"]["conv1"]["kernel"],
        (2, 2),
        ((3, 3), (3, 3)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    np.testing.assert_allclose(stem, expected, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_close_to_float32(tiny):
    model, variables, x = tiny
    out32 = model.apply(variables, x, train=False)
    model16 = RESNETS["resnet18"](width=4, dtype=jnp.bfloat16)
    out16 = model16.apply(variables, x, train=False)  # same float32 params
    assert out32.dtype == jnp.float32 and out16.dtype == jnp.bfloat16
    err = jnp.linalg.norm(out16.astype(jnp.float32) - out32) / jnp.linalg.norm(out32)
    assert float(err) < 0.05


def test_batchnorm_train_vs_eval(tiny):
    model, variables, x = tiny
    # Eval: running statistics, so a sample's output does not depend on the rest of the batch.
    eval_all = model.apply(variables, x, train=False)
    eval_one = model.apply(variables, x[:1], train=False)
    np.testing.assert_allclose(eval_all[:1], eval_one, rtol=1e-5, atol=1e-5)
    # Train: batch statistics (output depends on the batch) and running stats move by 0.1.
    train_all, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    train_one, _ = model.apply(variables, x[:2], train=True, mutable=["batch_stats"])
    assert not np.allclose(train_all[:2], train_one, atol=1e-4)
    assert not np.allclose(train_all, eval_all, atol=1e-4)
    _, state = model.apply(variables, x, train=False, capture_intermediates=True, mutable=[])
    stem = state["intermediates"]["conv1"]["__call__"][0]
    new_stats = updates["batch_stats"]["bn1"]
    np.testing.assert_allclose(new_stats["mean"], 0.1 * stem.mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(new_stats["var"], 0.9 + 0.1 * stem.var(axis=(0, 1, 2)), rtol=1e-4)


def test_zero_init_residual_and_bad_args():
    x = jnp.zeros((1, 32, 16, 3))
    model = make_resnet("resnet18", width=4, zero_init_residual=True)
    params = _init(model, x)["params"]
    assert float(jnp.abs(params["layer3_1"]["bn2"]["scale"]).max()) == 0.0
    assert float(jnp.abs(params["layer3_1"]["bn1"]["scale"]).min()) == 1.0
    with pytest.raises(ValueError, match="resnet18"):
        make_resnet("resnet19")
    with pytest.raises(ValueError, match="last_stride"):
        _shapes(RESNETS["resnet18"](width=4, last_stride=3), (1, 32, 16, 3))
