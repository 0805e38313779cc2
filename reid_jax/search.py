"""Search a gallery for each query: ``python -m reid_jax.search --gallery G.npz --query Q
--out REPORT/ [--distance cosine|euclidean] [--rerank] [--top_k 10] [--draw 10]``.

G.npz comes from ``python -m reid_jax.embed``; Q is another such .npz or a folder of footage
(embedded on the spot with the gallery's run and checkpoint). Writes REPORT/top_k.csv (query,
rank, gallery, distance) and the evaluation's ranked-list views (REPORT/index.html and a PNG per
drawn query). See docs/inference.md.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from reid_jax import logs
from reid_jax.inference import folders, model, search

_GALLERY = flags.DEFINE_string("gallery", None, "Gallery features (.npz of reid_jax.embed).")
_QUERY = flags.DEFINE_string("query", None, "Query features (.npz) or a folder of footage.")
_OUT = flags.DEFINE_string("out", None, "Report folder.")
_DISTANCE = flags.DEFINE_enum("distance", "euclidean", ["euclidean", "cosine"], "Distance.")
_RERANK = flags.DEFINE_bool("rerank", False, "k-reciprocal re-ranking (Zhong et al. 2017).")
_K1 = flags.DEFINE_integer("rerank_k1", 20, "Re-ranking k1.")
_K2 = flags.DEFINE_integer("rerank_k2", 6, "Re-ranking k2.")
_LAMBDA = flags.DEFINE_float("rerank_lambda", 0.3, "Re-ranking lambda.")
_TOP_K = flags.DEFINE_integer("top_k", 10, "Gallery tracklets per query in the CSV.")
_DRAW = flags.DEFINE_integer("draw", 10, "Ranked-list PNGs for the first N queries (0: none).")
_MAX_BAD = flags.DEFINE_integer("max_bad_images", 10, "A query folder: unreadable images skipped.")
flags.mark_flags_as_required(["gallery", "query", "out"])


def _query(gallery: folders.Features) -> folders.Features:
    path = Path(_QUERY.value)
    if path.is_dir():
        embedder = model.load(gallery.workdir, gallery.step)
        return folders.embed_folder(embedder, path, _MAX_BAD.value)
    return folders.load_features(path)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logs.quiet_libraries()
    try:
        gallery = folders.load_features(_GALLERY.value)
        query = _query(gallery)
        search.check_comparable(query, gallery)
        rerank_k = (_K1.value, _K2.value, _LAMBDA.value) if _RERANK.value else None
        dist = search.distances(query.features, gallery.features, _DISTANCE.value, rerank_k)
        out = Path(_OUT.value)
        out.mkdir(parents=True, exist_ok=True)
        search.write_csv(out / "top_k.csv", query, gallery, dist, _TOP_K.value)
        method = _DISTANCE.value + (" + re-ranking" if _RERANK.value else "")
        positions = list(range(min(_DRAW.value, len(query.names))))
        if positions:
            search.draw(out, query, gallery, dist, f"Gallery search ({method})", positions)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        logs.fail(str(e), 2)
    print(f"wrote {out / 'top_k.csv'} ({len(query.names)} queries x top {_TOP_K.value} of "
          f"{len(gallery.names)}) and {len(positions)} ranked lists in {out}")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
