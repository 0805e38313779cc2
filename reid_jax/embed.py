"""Embed one's own footage: ``python -m reid_jax.embed --workdir RUN --input DIR --out F.npz
[--step latest|best|N] [--batch_size B] [--max_bad_images K]``.

DIR holds one sub-folder of frames per tracklet (JPEG / PNG, any names, sorted naturally) or
loose images (one-frame tracklets). Writes features [N, D], tracklet names, frame counts, frame
files and the run / step to F.npz, extracted exactly as the evaluation extracts the test set
(docs/inference.md). Unreadable images are named and skipped, up to --max_bad_images.
"""

from __future__ import annotations

from absl import app, flags

from reid_jax import logs
from reid_jax.inference import folders, model

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory (with config.json).")
_INPUT = flags.DEFINE_string("input", None, "Folder of tracklet sub-folders or of images.")
_OUT = flags.DEFINE_string("out", None, "Output .npz of features.")
_STEP = flags.DEFINE_string("step", "latest", "Checkpoint: 'latest', 'best' or a step number.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Clips per batch (0: config.data.test_batch_size).")
_MAX_BAD = flags.DEFINE_integer(
    "max_bad_images", 10, "Unreadable images skipped (each named) before giving up."
)
flags.mark_flags_as_required(["workdir", "input", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    try:
        folders.scan(_INPUT.value)  # a bad input is named before the model loads
        embedder = model.load(_WORKDIR.value, _STEP.value, batch_size=_BATCH.value or None)
        feats = folders.embed_folder(embedder, _INPUT.value, _MAX_BAD.value)
        feats.save(_OUT.value)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        logs.fail(str(e), 2)
    print(
        f"wrote {_OUT.value}: {len(feats.names)} tracklets ({int(feats.lengths.sum())} frames), "
        f"features {feats.features.shape[1]}-d from {feats.workdir} step {feats.step}"
    )


if __name__ == "__main__":
    app.run(main)
