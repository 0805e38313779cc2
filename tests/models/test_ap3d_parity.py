"""Parity of APM, the AP3D / C3D / I3D bottlenecks, the non-local block and the whole AP3D(+NL)
ResNet-50 with the authors' PyTorch code (tests/models/ap3d_reference.py, a verbatim port of
guxinqian/AP3D ``models/`` at commit 84bd12a), weights copied torch -> flax, float32.

Criterion: rel = max|jax - torch| / max|torch| <= 1e-4, for outputs and for the gradients of
sum(out * cotangent) with respect to the input and every parameter.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from reid_jax.models.ap3d import APM
from reid_jax.models.nonlocal_block import NonLocalBlock
from reid_jax.models.resnet import Bottleneck, make_resnet

torch = pytest.importorskip("torch", reason="torch (the test extra) is not installed")

HERE = Path(__file__).resolve().parent
TOL = 1e-4


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load("ap3d_reference", HERE / "ap3d_reference.py")
bench = _load("parity_torch", HERE.parents[1] / "bench" / "parity_torch.py")


def rel(a, b, scale: float = 0.0) -> float:
    """max|a - b| / max(max|b|, scale)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), scale))


def assert_grads_close(got: dict, want: dict, zero: tuple = ()) -> None:
    """Per-tensor rel <= TOL, except the ``zero`` keys, whose exact gradient is 0: there both
    sides must be float noise, below 1e-5 of the block's largest gradient entry."""
    assert set(got) == set(want)
    scale = max(float(np.max(np.abs(np.asarray(w)))) for w in want.values())
    for key in want:
        if key in zero:
            assert np.max(np.abs(np.asarray(got[key]))) <= 1e-5 * scale
            assert np.max(np.abs(np.asarray(want[key]))) <= 1e-5 * scale
        else:
            assert rel(got[key], want[key]) <= TOL, key


def randomize(module, seed: int = 0, nl_scale: float = 1.0) -> None:
    """Every weight and BN statistic random (zero-inits too), so nothing is trivially 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, torch.nn.Conv3d | torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        for m in module.modules():
            if isinstance(m, ref.NonLocalBlockND):
                # Keep the attention logits theta . phi moderate: in a whole random ResNet-50
                # they reach thousands, where the softmax is so ill-conditioned that torch's own
                # float32 output is 8e-3 (rel) away from its float64 one.
                m.theta.weight.mul_(nl_scale)
                m.phi[0].weight.mul_(nl_scale)


# --------------------------------------------------------------------------- torch -> flax
def _conv(w) -> np.ndarray:
    """Conv3d weight [O,I,t,kh,kw] -> a 2-D HWIO kernel (t == 1) or a DHWIO one (t > 1)."""
    w = w.detach().numpy()
    if w.shape[2] == 1:
        return w[:, :, 0].transpose(2, 3, 1, 0)
    return w.transpose(2, 3, 4, 1, 0)


def _dense(w) -> np.ndarray:
    """1x1x1 Conv3d weight [O,I,1,1,1] -> Dense kernel [I,O]."""
    return w.detach().numpy()[:, :, 0, 0, 0].T


def _bn(bn, prefix: tuple) -> dict:
    return {
        ("params", *prefix, "scale"): bn.weight.detach().numpy(),
        ("params", *prefix, "bias"): bn.bias.detach().numpy(),
        ("batch_stats", *prefix, "mean"): bn.running_mean.numpy(),
        ("batch_stats", *prefix, "var"): bn.running_var.numpy(),
    }


def apm_flat(apm, prefix: tuple) -> dict:
    out = {("params", *prefix, "semantic_mapping", "kernel"): _dense(apm.semantic_mapping.weight)}
    if apm.contrastive_att:
        out[("params", *prefix, "x_mapping", "kernel")] = _dense(apm.x_mapping.weight)
        out[("params", *prefix, "n_mapping", "kernel")] = _dense(apm.n_mapping.weight)
        out[("params", *prefix, "contrastive_att", "kernel")] = _dense(
            apm.contrastive_att_net[0].weight
        )
    return out


def nonlocal_flat(nl, prefix: tuple) -> dict:
    out = _bn(nl.W[1], (*prefix, "W_bn"))
    for name, conv in (
        ("g", nl.g[0]),
        ("theta", nl.theta),
        ("phi", nl.phi[0]),
        ("W_conv", nl.W[0]),
    ):
        out[("params", *prefix, name, "kernel")] = _dense(conv.weight)
        out[("params", *prefix, name, "bias")] = conv.bias.detach().numpy()
    return out


def bottleneck_flat(block, prefix: tuple) -> dict:
    out = {("params", *prefix, "conv1", "kernel"): _conv(block.conv1.weight)}
    out.update(_bn(block.bn1, (*prefix, "bn1")))
    out.update(_bn(block.bn2, (*prefix, "bn2")))
    out.update(_bn(block.bn3, (*prefix, "bn3")))
    out[("params", *prefix, "conv3", "kernel")] = _conv(block.conv3.weight)
    conv2 = block.conv2
    if isinstance(conv2, torch.nn.Conv3d):  # inflate_conv (C2D)
        out[("params", *prefix, "conv2", "kernel")] = _conv(conv2.weight)
    elif isinstance(conv2, (ref.C2D, ref.I3D)):
        out[("params", *prefix, "conv2", "kernel")] = _conv(conv2.conv3d.weight)
    else:  # P3DC / APP3DC
        out[("params", *prefix, "conv2", "kernel")] = _conv(conv2.spatial_conv3d.weight)
        temporal = (*prefix, "conv2_temporal")
        out[("params", *temporal, "temporal_conv", "kernel")] = _conv(conv2.temporal_conv3d.weight)
        if isinstance(conv2, ref.APP3DC):
            out.update(apm_flat(conv2.APM, (*temporal, "apm")))
    if block.downsample is not None:
        out[("params", *prefix, "downsample_conv", "kernel")] = _conv(block.downsample[0].weight)
        out.update(_bn(block.downsample[1], (*prefix, "downsample_bn")))
    return out


def resnet_flat(model) -> dict:
    out = {("params", "conv1", "kernel"): _conv(model.conv1.weight)}
    out.update(_bn(model.bn1, ("bn1",)))
    for i in range(1, 5):
        j = -1
        for m in getattr(model, f"layer{i}"):
            if isinstance(m, ref.NonLocalBlockND):
                out.update(nonlocal_flat(m, (f"layer{i}_{j}_nonlocal",)))
            else:
                j += 1
                out.update(bottleneck_flat(m, (f"layer{i}_{j}",)))
    return out


def as_variables(flat: dict) -> dict:
    return jax.tree.map(jnp.asarray, traverse_util.unflatten_dict(flat))


def ncthw(x: np.ndarray, t: int):
    """flax frames [B*T,h,w,C] -> torch clips [B,C,T,h,w]."""
    b = x.shape[0] // t
    return torch.from_numpy(x.reshape(b, t, *x.shape[1:]).transpose(0, 4, 1, 2, 3).copy())


def frames(y, t: int) -> np.ndarray:
    """torch clips [B,C,T,h,w] -> frames [B*T,h,w,C]."""
    y = y.detach().numpy().transpose(0, 2, 3, 4, 1)
    return y.reshape(-1, *y.shape[2:])


def out_and_grads(fn, params, x, cot):
    """(fn(params, x), d/dparams, d/dx) of sum(fn(params, x) * cot), jitted once, f32 exact."""

    def run(params, x):
        out, vjp = jax.vjp(fn, params, x)
        return (out, *vjp(jnp.asarray(cot, out.dtype)))

    with jax.default_matmul_precision("highest"):
        return jax.jit(run)(params, x)


def torch_grads(module, x_t, cot_t):
    """Gradients of sum(module(x) * cot) w.r.t. x and every named parameter."""
    x_t = x_t.clone().requires_grad_(True)
    module.zero_grad()
    (module(x_t) * cot_t).sum().backward()
    return x_t.grad, {n: p.grad for n, p in module.named_parameters()}


# --------------------------------------------------------------------------- tests
def test_apm_forward_and_gradients():
    t, c = 4, 32
    apm = ref.APM(c, c // 16, time_dim=3, temperature=4, contrastive_att=True)
    randomize(apm, seed=1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, t, 6, 4, c)).astype(np.float32)  # clips [B,T,h,w,C]
    x_t = torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())
    with torch.no_grad():
        want = apm(x_t).numpy().transpose(0, 2, 3, 4, 1)  # [B, T*3, h, w, C]
    variables = as_variables(apm_flat(apm, ()))
    module = APM(time_dim=3, temperature=4.0, contrastive_att=True)
    cot = rng.normal(size=want.shape).astype(np.float32)
    got, gp, gx = out_and_grads(lambda v, x: module.apply(v, x), variables, x, cot)
    assert got.shape == want.shape
    assert rel(got, want) <= TOL
    gx_t, gp_t = torch_grads(apm, x_t, torch.from_numpy(cot.transpose(0, 4, 1, 2, 3).copy()))
    assert rel(gx, gx_t.numpy().transpose(0, 2, 3, 4, 1)) <= TOL
    for name, p in apm.named_parameters():
        p.data = gp_t[name].clone()
    want_g = traverse_util.flatten_dict(as_variables(apm_flat(apm, ()))["params"])
    assert_grads_close(traverse_util.flatten_dict(gp["params"]), want_g)


def _bottleneck_pair(kind: str, stride: int, seed: int):
    torch.manual_seed(seed)
    down = torch.nn.Sequential(
        torch.nn.Conv2d(64, 128, 1, stride, bias=False), torch.nn.BatchNorm2d(128)
    )
    block2d = bench.Bottleneck(64, 32, stride, down)
    cls = {"ap3d": ref.APP3DC, "c3d": ref.P3DC, "i3d": ref.I3D}[kind]
    torch_block = ref.Bottleneck3D(block2d, cls, inflate_time=True, temperature=4)
    randomize(torch_block, seed)
    options = {"kind": kind, "time_dim": 3}
    if kind == "ap3d":
        options.update(temperature=4.0, contrastive_att=True)
    flax_block = Bottleneck(features=32, stride=stride, temporal=tuple(options.items()))
    return torch_block, flax_block, as_variables(bottleneck_flat(torch_block, ()))


@pytest.mark.parametrize("kind,stride", [("ap3d", 2), ("c3d", 1), ("i3d", 2)])
def test_temporal_bottleneck_forward_eval_and_train(kind, stride):
    t = 4
    torch_block, flax_block, variables = _bottleneck_pair(kind, stride, seed=2)
    x = np.random.default_rng(3).normal(size=(2 * t, 8, 6, 64)).astype(np.float32)

    def both(v, x):  # eval-mode and train-mode (batch statistics) outputs
        train_out, _ = flax_block.apply(v, x, True, t, mutable=["batch_stats"])
        return flax_block.apply(v, x, False, t), train_out

    with jax.default_matmul_precision("highest"):
        got = jax.jit(both)(variables, x)
    for train in (False, True):
        torch_block.train(train)
        with torch.no_grad():
            want = frames(torch_block(ncthw(x, t)), t)
        assert got[train].shape == want.shape
        assert rel(got[train], want) <= TOL, (kind, train)


def test_ap3d_bottleneck_gradients_train_mode():
    t = 4
    torch_block, flax_block, variables = _bottleneck_pair("ap3d", 2, seed=4)
    torch_block.train()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2 * t, 8, 6, 64)).astype(np.float32)
    cot = rng.normal(size=(2 * t, 4, 3, 128)).astype(np.float32)
    gx_t, gp_t = torch_grads(torch_block, ncthw(x, t), ncthw(cot, t))

    def loss(params, x):
        out, _ = flax_block.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, True, t,
            mutable=["batch_stats"],
        )  # fmt: skip
        return jnp.sum(out * cot)

    with jax.default_matmul_precision("highest"):
        gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)
    assert rel(gx, frames(gx_t, t)) <= TOL
    # Map torch's parameter gradients through the same converter as the weights.
    for name, p in torch_block.named_parameters():
        p.data = gp_t[name].clone()
    want = traverse_util.flatten_dict(as_variables(bottleneck_flat(torch_block, ()))["params"])
    assert_grads_close(traverse_util.flatten_dict(gp), want)


@pytest.mark.parametrize("train", [False, True])
def test_nonlocal_block_forward_and_gradients(train):
    t, c = 4, 32
    nl = ref.NonLocalBlock3D(c, sub_sample=True)
    randomize(nl, seed=6)
    nl.train(train)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2 * t, 6, 4, c)).astype(np.float32)
    cot = rng.normal(size=x.shape).astype(np.float32)
    variables = as_variables(nonlocal_flat(nl, ()))
    module = NonLocalBlock()
    with torch.no_grad():
        want = frames(nl(ncthw(x, t)), t)
    gx_t, gp_t = torch_grads(nl, ncthw(x, t), ncthw(cot, t))

    def apply(params, x):
        out = module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, x, t, train,
            mutable=["batch_stats"] if train else False,
        )  # fmt: skip
        return out[0] if train else out

    got, gp, gx = out_and_grads(apply, variables["params"], x, cot)
    assert rel(got, want) <= TOL
    assert rel(gx, frames(gx_t, t)) <= TOL
    for name, p in nl.named_parameters():
        p.data = gp_t[name].clone()
    want_g = traverse_util.flatten_dict(as_variables(nonlocal_flat(nl, ()))["params"])
    # phi's bias: the softmax over keys is invariant to each query row's theta . b_phi shift;
    # in train mode, W_conv's and g's biases (g's passes through the row-stochastic attention
    # as a constant shift): the BatchNorm after W_conv subtracts the batch mean.
    zero = (("phi", "bias"),)
    zero += (("W_conv", "bias"), ("g", "bias")) if train else ()
    assert_grads_close(traverse_util.flatten_dict(gp), want_g, zero)


def test_whole_ap3d_nl_resnet50_forward_256x128():
    """AP3DNLResNet50 (AP3D convs in 2.0,2.2,3.0,3.2,3.4; NL after 2.1,2.3,3.1,3.3,3.5), T=4,
    256x128, batch 2, eval mode (random BN statistics), layer4 maps."""
    t = 4
    torch.manual_seed(8)
    model = ref.ap3d_nl_resnet50(bench.ResNet("resnet50", last_stride=2)).eval()
    randomize(model, seed=8, nl_scale=0.1)
    x = bench.random_input(2 * t, 256, 128, seed=9)  # normalised frames [B*T, H, W, 3]
    with torch.no_grad():
        want = frames(model.features(ncthw(x, t)), t)
    variables = as_variables(resnet_flat(model))
    backbone = make_resnet(
        "resnet50", last_stride=1, temporal="ap3d",
        temporal_blocks=((2, 0), (2, 2), (3, 0), (3, 2), (3, 4)),
        nonlocal_blocks=((2, 1), (2, 3), (3, 1), (3, 3), (3, 5)),
    )  # fmt: skip
    expected = jax.eval_shape(
        lambda x: backbone.init(jax.random.key(0), x, train=False, seq_len=t), x
    )
    flat_expected = traverse_util.flatten_dict(expected)
    flat_got = traverse_util.flatten_dict(variables)
    assert set(flat_got) == set(flat_expected)  # every weight of the authors' model, no other
    with jax.default_matmul_precision("highest"):
        got = jax.jit(lambda v, x: backbone.apply(v, x, train=False, seq_len=t))(variables, x)
    assert got.shape == want.shape == (2 * t, 16, 8, 2048)
    assert rel(got, want) <= TOL
