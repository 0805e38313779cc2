"""Export to StableHLO and ONNX: reloaded / run, the exported model gives the JAX features."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import jax
import numpy as np
import pytest

from reid_jax.data.transforms import normalize
from reid_jax.fusion import FUSIONS
from reid_jax.inference import export

from ..conftest import ROOT

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("jax2onnx", "onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(
    not HAS_ONNX, reason="ONNX export needs the export extra (jax2onnx, onnx, onnxruntime)"
)


def _images(embedder, n=5):
    h, w = embedder.size
    return np.random.default_rng(1).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_stablehlo_round_trip_clips_and_images(embedder, tmp_path):
    diff = export.to_stablehlo(embedder, tmp_path / "clips.stablehlo")
    assert diff < export.TOLERANCE
    reloaded = jax.export.deserialize(bytearray((tmp_path / "clips.stablehlo").read_bytes()))
    assert "stablehlo.convolution" in (tmp_path / "clips.mlir").read_text()
    # Dynamic batch: a batch size never seen at export time.
    h, w = embedder.size
    clips = np.random.default_rng(2).integers(0, 256, (7, embedder.seq_len, h, w, 3), np.uint8)
    got = np.asarray(reloaded.call(clips))
    assert export.relative_difference(got, embedder.embed_clips(clips)) < export.TOLERANCE
    export.to_stablehlo(embedder, tmp_path / "image.stablehlo", image=True)
    reloaded = jax.export.deserialize(bytearray((tmp_path / "image.stablehlo").read_bytes()))
    images = _images(embedder)
    nchw = np.transpose(np.asarray(normalize(images)), (0, 3, 1, 2))
    got = np.asarray(reloaded.call(nchw))
    assert export.relative_difference(got, embedder.embed_images(images)) < export.TOLERANCE


def test_a_wrong_export_fails_loudly(embedder, tmp_path, monkeypatch):
    real = export.embed_fn
    monkeypatch.setattr(
        export, "embed_fn", lambda e, image=False: lambda x: real(e, image)(x) * 1.01
    )
    with pytest.raises(RuntimeError, match="StableHLO export differs from the JAX model"):
        export.to_stablehlo(embedder, tmp_path / "bad.stablehlo", image=True)


@needs_onnx
def test_onnx_image_model_for_trackers(embedder, tmp_path):
    import onnx
    import onnxruntime

    path = tmp_path / "reid.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "reid_jax.export", f"--workdir={embedder.workdir}",
         "--format=onnx", "--image", f"--out={path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max relative difference to the JAX model" in proc.stdout
    h, w = embedder.size
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["input"].startswith(f"float32 [N, 3, {h}, {w}] (NCHW")
    assert "ImageNet mean (0.485, 0.456, 0.406)" in props["input"]
    assert props["output"].startswith("output 0: float32 [N, D]") and props["reid_jax.step"] == "3"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape == ["N", 3, h, w] and inp.type == "tensor(float)"
    images = _images(embedder, n=9)  # another batch size than the export's check
    nchw = np.transpose(np.asarray(normalize(images)), (0, 3, 1, 2))
    got = session.run(None, {inp.name: nchw})[0]
    assert export.relative_difference(got, embedder.embed_images(images)) < export.TOLERANCE


@needs_onnx
def test_onnx_clip_model(embedder, tmp_path):
    diff = export.to_onnx(embedder, tmp_path / "clips.onnx", seq_len=2)
    assert diff < export.TOLERANCE
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "clips.onnx"))
    (inp,) = session.get_inputs()
    assert inp.shape[:2] == ["N", 2] and inp.type == "tensor(uint8)"


def _random_embedder(fusion: str):
    """A randomly initialised tiny model with ``fusion`` as an Embedder (no training needed)."""
    from reid_jax import parallel
    from reid_jax.config_base import base_config
    from reid_jax.evaluation.evaluators import RetrievalEvaluator
    from reid_jax.inference.model import Embedder
    from reid_jax.jobs.evaluation import retrieval_config
    from reid_jax.models.reid import make_model
    from reid_jax.train.state import TrainState

    cfg = base_config()
    cfg.model.arch, cfg.model.width, cfg.model.fusion = "resnet18", 4, fusion
    cfg.data.height, cfg.data.width, cfg.data.seq_len, cfg.data.test_batch_size = 32, 16, 2, 4
    model = make_model(cfg.model, 3)
    v = model.init(jax.random.key(0), np.zeros((1, 2, 32, 16, 3), np.float32), train=False)
    state = TrainState(np.int32(0), v["params"], v.get("batch_stats", {}), None)
    mesh = parallel.make_mesh(cfg.mesh)
    ev = RetrievalEvaluator(
        retrieval_config(cfg)[1], model=model, source=None, index=None, data_cfg=cfg.data,
        mesh=mesh, process=parallel.process_slice(mesh, 4),
    )  # fmt: skip
    return Embedder(cfg, "random", 0, model, state, ev)


@needs_onnx
@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_onnx_fusions(fusion, tmp_path):
    """docs/inference.md's table: every fusion exports to ONNX (clips, T = 2, dynamic batch)."""
    embedder = _random_embedder(fusion)
    assert export.to_onnx(embedder, tmp_path / "m.onnx") < export.TOLERANCE
