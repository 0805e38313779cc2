"""Tests for importing torchvision/timm ResNet weights: safetensors I/O, key mapping, errors,
the pretrained train state, and (with torch) feature-map parity against a torch reference."""

import importlib.util
import json
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from reid_jax.models import pretrained
from reid_jax.models.reid import ReIDModel
from reid_jax.train import state as state_lib

BENCH = Path(__file__).resolve().parents[2] / "bench" / "parity_torch.py"
TORCH_REASON = "torch (the `test` extra, CPU wheel) is not installed: torch parity tests skipped"
STAGES = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}


def torchvision_state_dict(arch: str, width: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random state dict with torchvision's key names and shapes, written out from its rules."""
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}

    def conv(name, o, i, k):
        sd[f"{name}.weight"] = rng.normal(0, (2 / (o * k * k)) ** 0.5, (o, i, k, k))

    def bn(name, c):
        sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c)
        sd[f"{name}.bias"] = rng.normal(0, 0.1, c)
        sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c)
        sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c)
        sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)

    block, stages = STAGES[arch]
    expansion = 4 if block == "bottleneck" else 1
    conv("conv1", width, 3, 7)
    bn("bn1", width)
    inplanes = width
    for i, n in enumerate(stages):
        planes = width * 2**i
        for j in range(n):
            p = f"layer{i + 1}.{j}"
            if block == "basic":
                conv(f"{p}.conv1", planes, inplanes, 3), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            else:
                conv(f"{p}.conv1", planes, inplanes, 1), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1), bn(f"{p}.bn3", planes * 4)
            if j == 0 and (i > 0 or inplanes != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    sd["fc.weight"] = rng.normal(0, 0.01, (1000, inplanes))
    sd["fc.bias"] = np.zeros(1000)
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in sd.items()}


def test_safetensors_reader_on_hand_built_file(tmp_path):
    # Spec: u64 LE header length, JSON header, raw little-endian bytes; BF16 1.0=0x3F80, -2=0xC000.
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "F32", "shape": [2, 1], "data_offsets": [0, 8]},
        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [8, 12]},
        "c": {"dtype": "I64", "shape": [], "data_offsets": [12, 20]},
    }
    head = json.dumps(header).encode()
    body = np.array([1.5, -3.25], "<f4").tobytes() + bytes([0x80, 0x3F, 0x00, 0xC0])
    body += np.array(42, "<i8").tobytes()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(head).to_bytes(8, "little") + head + body)
    out = pretrained.read_safetensors(path)
    assert set(out) == {"a", "b", "c"}
    np.testing.assert_array_equal(out["a"], [[1.5], [-3.25]])
    assert out["b"].dtype == np.float32 and out["b"].tolist() == [1.0, -2.0]
    assert out["c"].shape == () and int(out["c"]) == 42

    for bad in (body[:-1], body + b"x"):  # truncated data, trailing bytes
        path.write_bytes(len(head).to_bytes(8, "little") + head + bad)
        with pytest.raises(ValueError, match=f"^{path}: not a readable safetensors file .*cover"):
            pretrained.read_safetensors(path)
    for bad in ((10**6).to_bytes(8, "little") + b"{}", b"plain text, not tensors", b""):
        path.write_bytes(bad)
        with pytest.raises(ValueError, match=f"^{path}: not a readable safetensors file .*header"):
            pretrained.read_safetensors(path)
    with pytest.raises(FileNotFoundError, match=f"^safetensors file {tmp_path} does not exist"):
        pretrained.read_safetensors(tmp_path)  # a directory


def test_safetensors_writer_round_trip_and_alignment(tmp_path):
    tensors = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "t": np.arange(6, dtype=np.float64).reshape(2, 3).T,  # strided: written as its values
        "h": np.array([0.5, -1], np.float16),
        "n": np.array(3, np.int64),
        "m": np.array([True, False]),
    }
    path = tmp_path / "y.safetensors"
    pretrained.write_safetensors(path, tensors, metadata={"k": "v"})
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    assert n % 8 == 0 and json.loads(data[8 : 8 + n])["__metadata__"] == {"k": "v"}
    back = pretrained.read_safetensors(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        np.testing.assert_array_equal(back[k], v)


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    """A resnet18 width-8 torchvision state dict under 'module.', as .safetensors (numpy only)."""
    sd = {"module." + k: v for k, v in torchvision_state_dict("resnet18", 8).items()}
    path = tmp_path_factory.mktemp("w") / "r18.safetensors"
    pretrained.write_safetensors(path, sd)
    return path, sd


def test_key_mapping_without_torch(r18_file):
    path, sd = r18_file
    module, variables = pretrained.load_backbone(path, "resnet18", last_stride=1, width=8)
    assert module.last_stride == 1
    p, s = variables["params"], variables["batch_stats"]

    def t(key):
        return sd["module." + key]

    np.testing.assert_array_equal(p["conv1"]["kernel"], t("conv1.weight").transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["bn1"]["scale"], t("bn1.weight"))
    np.testing.assert_array_equal(p["bn1"]["bias"], t("bn1.bias"))
    np.testing.assert_array_equal(s["bn1"]["mean"], t("bn1.running_mean"))
    np.testing.assert_array_equal(
        p["layer2_0"]["downsample_conv"]["kernel"][0, 0],
        t("layer2.0.downsample.0.weight")[:, :, 0, 0].T,
    )
    np.testing.assert_array_equal(s["layer4_1"]["bn2"]["var"], t("layer4.1.bn2.running_var"))
    np.testing.assert_array_equal(
        p["layer3_0"]["downsample_bn"]["bias"], t("layer3.0.downsample.1.bias")
    )
    # Every tensor used once; fc and num_batches_tracked dropped.
    kept = [k for k in sd if not k.endswith("num_batches_tracked") and ".fc." not in k]
    assert len(jax.tree.leaves(variables)) == len(kept) == len(sd) - 2 - 20
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {np.dtype(np.float32)}


def test_stem_conv_matches_torch_cross_correlation_in_numpy(r18_file):
    # Independent of torch: NCHW cross-correlation, stride 2, padding 3, with the OIHW weight.
    path, sd = r18_file
    module, variables = pretrained.load_backbone(path, "resnet18", width=8)
    x = np.random.default_rng(1).normal(size=(1, 10, 6, 3)).astype(np.float32)
    _, inter = jax.jit(
        lambda v, x: module.apply(
            v, x, train=False, capture_intermediates=lambda m, _: m.scope.path == ("conv1",)
        )
    )(variables, x)
    got = np.asarray(inter["intermediates"]["conv1"]["__call__"][0])
    w = sd["module.conv1.weight"].astype(np.float64)  # [O, I, 7, 7]
    xp = np.pad(x[0].astype(np.float64), ((3, 3), (3, 3), (0, 0)))
    want = np.zeros((5, 3, 8))
    for y in range(5):
        for xx in range(3):
            patch = xp[2 * y : 2 * y + 7, 2 * xx : 2 * xx + 7, :]  # [kh, kw, I]
            want[y, xx] = np.einsum("hwi,oihw->o", patch, w)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)


def test_one_error_lists_every_difference(tmp_path, r18_file):
    _, sd = r18_file
    bad = dict(sd)
    del bad["module.layer3.1.bn2.running_var"]
    bad["module.layer1.0.se.fc1.weight"] = np.zeros((2, 8, 1, 1), np.float32)
    bad["module.layer2.0.conv1.weight"] = np.zeros((16, 4, 3, 3), np.float32)
    path = tmp_path / "bad.safetensors"
    pretrained.write_safetensors(path, bad)
    with pytest.raises(ValueError) as e:
        pretrained.load_backbone(path, "resnet18", width=8)
    msg = str(e.value)
    assert "3 differences" in msg and str(path) in msg
    assert "missing    module.layer3.1.bn2.running_var [32]" in msg
    assert "unexpected module.layer1.0.se.fc1.weight [2, 8, 1, 1]" in msg
    assert "shape      module.layer2.0.conv1.weight: file [16, 4, 3, 3], model [16, 8, 3, 3]" in msg


def test_wrong_arch_is_named_in_the_error(r18_file):
    path, _ = r18_file
    with pytest.raises(ValueError, match=r"(?s)missing    module\.layer1\.2\.conv1.*like resnet18"):
        pretrained.load_backbone(path, "resnet34", width=8)
    with pytest.raises(ValueError, match=r"(?s)shape .*looks like resnet18 \(width 8\)"):
        pretrained.load_backbone(path, "resnet18", width=16)


def test_prefix_detection_ignores_other_modules(tmp_path, r18_file):
    _, sd = r18_file
    plain = torchvision_state_dict("resnet18", 8)
    nested = {"model.backbone." + k: v for k, v in plain.items()}
    nested["model.head.weight"] = np.zeros((3, 3), np.float32)
    path = tmp_path / "nested.safetensors"
    pretrained.write_safetensors(path, nested)
    _, variables = pretrained.load_backbone(path, "resnet18", width=8)
    np.testing.assert_array_equal(
        variables["params"]["layer1_1"]["conv2"]["kernel"],
        plain["layer1.1.conv2.weight"].transpose(2, 3, 1, 0),
    )
    assert pretrained.detect_prefix(sd) == "module."
    with pytest.raises(ValueError, match="several ResNets"):
        pretrained.detect_prefix({**sd, **nested})


def test_bad_paths_and_missing_torch(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        pretrained.load_backbone(tmp_path / "nope.safetensors", "resnet18")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown suffix '.npz'"):
        pretrained.load_backbone(tmp_path / "w.npz", "resnet18")
    (tmp_path / "w.pth").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match="needs torch.*safetensors"):
        pretrained.read_torch(tmp_path / "w.pth")


def _replicated():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def test_train_state_starts_from_pretrained_backbone(r18_file):
    path, _ = r18_file
    model = ReIDModel(num_classes=5, arch="resnet18", width=8)
    tx = optax.adam(1e-3)
    rng = jax.random.key(0, impl="unsafe_rbg")
    clip_shape = (2, 2, 32, 16, 3)
    state, abstract = state_lib.create(rng, model, tx, clip_shape, _replicated(), str(path))
    _, loaded = pretrained.load_backbone(path, "resnet18", width=8)
    jax.tree.map(np.testing.assert_array_equal, state.params["backbone"], loaded["params"])
    jax.tree.map(
        np.testing.assert_array_equal, state.batch_stats["backbone"], loaded["batch_stats"]
    )
    assert set(state.params) == {"backbone", "bnneck", "classifier"}
    mu = state.opt_state[0].mu
    assert jax.tree.structure(mu) == jax.tree.structure(state.params)
    assert jax.tree.structure(abstract.params) == jax.tree.structure(state.params)
    random_state, _ = state_lib.create(rng, model, tx, clip_shape, _replicated())
    assert not np.array_equal(
        random_state.params["backbone"]["conv1"]["kernel"], loaded["params"]["conv1"]["kernel"]
    )
    np.testing.assert_array_equal(  # the rest of the model is the same random init
        random_state.params["classifier"]["kernel"], state.params["classifier"]["kernel"]
    )
    wide = ReIDModel(num_classes=5, arch="resnet18", width=16)
    with pytest.raises(ValueError, match="differences"):
        state_lib.create(rng, wide, tx, clip_shape, _replicated(), str(path))


@pytest.fixture(scope="module")
def bench():
    """bench/parity_torch.py as a module (it holds the hand-written torchvision-layout ResNet)."""
    pytest.importorskip("torch", reason=TORCH_REASON)
    spec = importlib.util.spec_from_file_location("parity_torch", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("last_stride", [2, 1])
def test_feature_map_parity_with_torch_resnet18(bench, tmp_path, last_stride):
    model = bench.reference_model("resnet18", last_stride)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's resnet18
    paths = bench.save_state_dict(model, tmp_path)
    x = bench.random_input(2, 64, 32)
    ref = bench.torch_features(model, x)
    assert ref.shape == ((2, 2, 1, 512) if last_stride == 2 else (2, 4, 2, 512))  # 1/32, 1/16
    _, from_st = pretrained.load_backbone(paths["safetensors"], "resnet18", last_stride)
    module, from_pth = pretrained.load_backbone(paths["pth"], "resnet18", last_stride)
    jax.tree.map(np.testing.assert_array_equal, from_st, from_pth)
    # The random BN statistics matter: with other statistics the output differs grossly.
    other = {**from_pth, "batch_stats": jax.tree.map(np.ones_like, from_pth["batch_stats"])}
    with jax.default_matmul_precision("highest"):  # part of jit's cache key: one compile
        out = bench.forward(module, from_pth, x)
        out_other = bench.forward(module, other, x)
    assert out.shape == ref.shape
    assert bench.rel_max_diff(out, ref) <= 1e-4
    assert bench.rel_max_diff(out_other, ref) > 1e-2


def test_timm_training_checkpoint_layout(bench, tmp_path):
    import torch

    model = bench.reference_model("resnet18", 2)
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": sd}, tmp_path / "model_best.pth.tar")
    _, got = pretrained.load_backbone(tmp_path / "model_best.pth.tar", "resnet18")
    np.testing.assert_array_equal(
        got["batch_stats"]["layer3_1"]["bn1"]["mean"],
        model.layer3[1].bn1.running_mean.numpy(),
    )
    np.testing.assert_array_equal(
        got["params"]["layer4_0"]["conv2"]["kernel"],
        model.layer4[0].conv2.weight.detach().numpy().transpose(2, 3, 1, 0),
    )


def test_pickle_refused_by_weights_only_is_explained(bench, tmp_path):
    (tmp_path / "w.pth").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"w\.pth: torch\.load\(weights_only=True\) refused"):
        pretrained.read_torch(tmp_path / "w.pth")
