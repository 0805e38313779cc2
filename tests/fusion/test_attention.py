"""temporal_attention against a torch port of the field's TA head (ResNet50TA) and its init."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reid_jax.fusion import temporal_attention
from reid_jax.fusion.attention import TemporalAttentionFusion

torch = pytest.importorskip("torch")
F = torch.nn.functional


class AnchorTAHead(torch.nn.Module):
    """ResNet50TA's attention head, jiyanggao/Video-Person-ReID commit
    dfe9a02e9dcae1a7aef66d9fd6a7896f015c6394, models/ResNet.py (``__init__`` and ``forward``
    from ``self.base(x)`` on; feat_dim / middle_dim / the [7,4] kernel made arguments)."""

    def __init__(self, feat_dim: int, middle_dim: int, kernel: tuple[int, int]):
        super().__init__()
        self.feat_dim, self.middle_dim = feat_dim, middle_dim
        self.attention_conv = torch.nn.Conv2d(feat_dim, middle_dim, list(kernel))
        self.attention_tconv = torch.nn.Conv1d(middle_dim, 1, 3, padding=1)

    def forward(self, x, b, t):  # x: the base's output [b*t, C, h, w]
        a = F.relu(self.attention_conv(x))
        a = a.view(b, t, self.middle_dim)
        a = a.permute(0, 2, 1)
        a = F.relu(self.attention_tconv(a))
        a = a.view(b, t)
        x = F.avg_pool2d(x, x.size()[2:])
        a = F.softmax(a, dim=1)
        x = x.view(b, t, -1)
        a = torch.unsqueeze(a, -1)
        a = a.expand(b, t, self.feat_dim)
        att_x = torch.mul(x, a)
        att_x = torch.sum(att_x, 1)
        return att_x.view(b, self.feat_dim), a[..., 0]


def _params_from_torch(head: AnchorTAHead) -> dict[str, np.ndarray]:
    """torch layouts -> ours: Conv2d [d,C,h,w] -> [h,w,C,d]; Conv1d [1,d,k] -> [k,d,1]."""
    sk = head.attention_conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    tk = head.attention_tconv.weight.detach().numpy().transpose(2, 1, 0)
    return {
        "spatial_kernel": sk,
        "spatial_bias": head.attention_conv.bias.detach().numpy(),
        "temporal_kernel": tk,
        "temporal_bias": head.attention_tconv.bias.detach().numpy()[0],
    }


def test_matches_the_anchor_head_including_its_relu():
    torch.manual_seed(0)
    b, t, h, w, c, d = 3, 4, 3, 2, 8, 5
    head = AnchorTAHead(c, d, (h, w))
    with torch.no_grad():
        head.attention_tconv.bias.fill_(-0.3)  # some clips with all scores < 0 before the ReLU
    maps = np.maximum(np.random.default_rng(0).normal(size=(b, t, h, w, c)), 0).astype(np.float32)
    x = torch.from_numpy(maps.reshape(b * t, h, w, c).transpose(0, 3, 1, 2).copy())
    want_f, want_w = (v.detach().numpy() for v in head(x, b, t))
    module = TemporalAttentionFusion(hidden=d)
    params = {"params": {k: jnp.asarray(v) for k, v in _params_from_torch(head).items()}}
    fused, aux = jax.jit(lambda v, m: module.apply(v, m, False))(params, jnp.asarray(maps))
    np.testing.assert_allclose(fused, want_f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aux["weights"], want_w, rtol=1e-5, atol=1e-7)
    # the ReLU matters on these inputs: without it the weights differ
    _, plain = temporal_attention(
        jnp.asarray(maps), *(jnp.asarray(v) for v in _params_from_torch(head).values()),
        score_relu=False,
    )  # fmt: skip
    assert not np.allclose(plain["weights"], want_w, atol=1e-4)


def test_without_the_relu_negative_scores_reach_the_softmax():
    rng = np.random.default_rng(1)
    maps = jnp.asarray(rng.normal(size=(2, 4, 2, 2, 3)), jnp.float32)
    sk, sb = jnp.asarray(rng.normal(size=(2, 2, 3, 4)), jnp.float32), jnp.zeros(4)
    tk = jnp.asarray(rng.normal(size=(3, 4, 1)), jnp.float32)
    _, relu = temporal_attention(maps, sk, sb, tk, jnp.float32(-100.0))
    np.testing.assert_allclose(relu["weights"], 0.25, rtol=1e-6)  # all scores 0: uniform
    _, raw = temporal_attention(maps, sk, sb, tk, jnp.float32(-100.0), score_relu=False)
    assert np.ptp(np.asarray(raw["weights"]), axis=1).min() > 1e-3


def test_init_is_pytorch_default():
    h, w, c, d, k = 3, 2, 16, 32, 3
    maps = jnp.zeros((1, 4, h, w, c))
    module = TemporalAttentionFusion(hidden=d, temporal_kernel=k)
    p = module.init(jax.random.key(0), maps, False)["params"]
    for name, fan_in in (("spatial", h * w * c), ("temporal", k * d)):
        bound = 1 / math.sqrt(fan_in)  # torch: kaiming_uniform(a=sqrt(5)) and the bias rule
        kernel = np.asarray(p[f"{name}_kernel"]).ravel()
        assert np.all(np.abs(kernel) <= bound) and np.abs(kernel).max() > 0.9 * bound
        assert np.std(kernel) == pytest.approx(bound / math.sqrt(3), rel=0.15)
        bias = np.asarray(p[f"{name}_bias"])
        assert np.all(np.abs(bias) <= bound) and np.any(bias != 0)
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(c, d, [h, w])  # the same bound in torch itself
    bound_2d = 1 / math.sqrt(h * w * c)
    for t in (ref.weight, ref.bias):
        assert t.abs().max().item() <= bound_2d and t.abs().max().item() > 0.9 * bound_2d
