"""Export a trained run: ``python -m reid_jax.export --workdir RUN --format onnx|stablehlo
--out FILE [--seq_len T] [--image] [--step latest|best|N]``.

ONNX (jax2onnx, opset 21, dynamic batch) or StableHLO (``jax.export``, serialized; reload with
``jax.export.deserialize``). ``--image``: one float32 input N x 3 x H x W (NCHW), RGB,
ImageNet mean/std-normalised, H x W = the run's config.data.height x width (256 x 128 for the
MARS configs); output 0 is the [N, D] feature. Each export is run on the spot against the JAX
model on a random batch: the max relative difference is printed, above 1e-4 it fails.
"""

from __future__ import annotations

from absl import app, flags

from reid_jax import logs
from reid_jax.inference import export, model

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory (with config.json).")
_FORMAT = flags.DEFINE_enum("format", None, ["onnx", "stablehlo"], "Export format.")
_OUT = flags.DEFINE_string("out", None, "Output file (.onnx / .stablehlo).")
_STEP = flags.DEFINE_string("step", "latest", "Checkpoint: 'latest', 'best' or a step number.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 0, "Frames per clip T (0: config.data.seq_len).")
_IMAGE = flags.DEFINE_bool("image", False, "Single-image NCHW float32 variant (trackers).")
flags.mark_flags_as_required(["workdir", "format", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    convert = {"onnx": export.to_onnx, "stablehlo": export.to_stablehlo}[_FORMAT.value]
    try:
        embedder = model.load(_WORKDIR.value, _STEP.value)
        diff = convert(embedder, _OUT.value, image=_IMAGE.value, seq_len=_SEQ_LEN.value)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        logs.fail(str(e), 2)
    seq_len = 1 if _IMAGE.value else _SEQ_LEN.value or embedder.seq_len
    for key, value in export.describe(embedder, _IMAGE.value, seq_len).items():
        print(f"{key}: {value}")
    print(f"wrote {_OUT.value}; max relative difference to the JAX model: {diff:.3g} "
          f"(limit {export.TOLERANCE:g})")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
