"""Tests for python -m reid_jax.tools.import_weights: state dict -> orbax backbone checkpoint."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from reid_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reid_jax.models import pretrained
from reid_jax.models.resnet import make_resnet
from reid_jax.tools import import_weights


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A resnet18 width-8 state dict in torchvision names (random values), as .safetensors."""
    abstract = pretrained.abstract_variables(make_resnet("resnet18", width=8))
    rng = np.random.default_rng(0)
    sd = {"fc.weight": np.zeros((1000, 64), np.float32)}
    for path, leaf in jax.tree_util.tree_leaves_with_path(abstract):
        keys = tuple(k.key for k in path)
        value = rng.normal(size=leaf.shape).astype(np.float32)
        sd[pretrained.torch_name(keys)] = (
            value.transpose(3, 2, 0, 1) if keys[-1] == "kernel" else value  # HWIO -> OIHW
        )
    file = tmp_path_factory.mktemp("src") / "r18.safetensors"
    pretrained.write_safetensors(file, sd)
    return file


def test_cli_writes_a_checkpoint_that_loads_identically(source, tmp_path, capsys):
    out = tmp_path / "r18_orbax"
    import_weights.main(
        ["--from", str(source), "--arch", "resnet18", "--width", "8", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert str(out) in printed and "resnet18 backbone" in printed and "parameters" in printed
    _, from_file = pretrained.load_backbone(source, "resnet18", last_stride=1, width=8)
    module, from_dir = pretrained.load_backbone(out, "resnet18", last_stride=1, width=8)
    assert module.last_stride == 1
    assert jax.tree.structure(from_file) == jax.tree.structure(from_dir)
    jax.tree.map(np.testing.assert_array_equal, from_file, from_dir)
    variables, meta = pretrained.read_orbax(out)
    assert meta["arch"] == "resnet18" and meta["width"] == 8 and meta["source"] == str(source)
    assert tuple(meta["mean"]) == IMAGENET_MEAN and tuple(meta["std"]) == IMAGENET_STD
    assert isinstance(jax.tree.leaves(variables)[0], np.ndarray)

    with pytest.raises(ValueError, match="already exists"):
        import_weights.convert(source, "resnet18", out, width=8)
    import_weights.convert(source, "resnet18", out, width=8, force=True)
    with pytest.raises(ValueError, match=r"(?s)resnet18, width 8\) does not match.*shape "):
        pretrained.load_backbone(out, "resnet18", width=16)


def test_wrong_arch_writes_nothing(source, tmp_path):
    out = tmp_path / "r34"
    with pytest.raises(ValueError, match=r"(?s)missing    layer1\.2\.conv1\.weight.*resnet18"):
        import_weights.convert(source, "resnet34", out, width=8)
    assert not out.exists()


def test_foreign_orbax_checkpoint_is_rejected(tmp_path):
    foreign = tmp_path / "foreign"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(foreign, {"params": {"w": np.zeros(2, np.float32)}})
    with pytest.raises(ValueError, match="format None.*import_weights"):
        pretrained.load_backbone(foreign, "resnet18", width=8)
