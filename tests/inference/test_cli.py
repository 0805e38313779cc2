"""The embed and search commands end to end on footage folders made from the tiny run's test
frames, and their one-line errors."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest

from reid_jax.inference import folders

from ..conftest import ROOT
from .conftest import longest, write_footage


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_embed_then_search_a_folder(evaluated, tmp_path):
    _, workdir, source, index, want = evaluated
    gallery_ids = longest(index, 6)
    gallery_dir = write_footage(source, index, gallery_ids, tmp_path / "gallery")
    out = tmp_path / "gallery.npz"
    proc = _run("reid_jax.embed", f"--workdir={workdir}", f"--input={gallery_dir}", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "wrote" in proc.stdout and "6 tracklets" in proc.stdout
    feats = folders.load_features(out)
    # Folders sort naturally (person_2 < person_10): map names back to split rows.
    rows = [int(n.split("_")[1]) for n in feats.names]
    assert sorted(rows) == sorted(gallery_ids)
    assert feats.lengths.tolist() == index.length[rows].tolist() and feats.step == 3
    np.testing.assert_allclose(feats.features, want[rows], atol=1e-5, rtol=0)
    # Frames in natural order (f2 before f10), not string order, in every tracklet.
    ends = np.cumsum(feats.lengths)
    for end, length in zip(ends, feats.lengths):
        numbers = [int(f.rsplit("/f", 1)[1][:-4]) for f in feats.files[end - length : end]]
        assert numbers == list(range(1, length + 1))

    # Query: a folder, embedded on the spot with the gallery's run and step; each query is in
    # the gallery, so it ranks itself first at distance ~0.
    query_dir = write_footage(source, index, gallery_ids[:2], tmp_path / "query")
    report = tmp_path / "report"
    proc = _run("reid_jax.search", f"--gallery={out}", f"--query={query_dir}",
                f"--out={report}", "--distance=cosine", "--top_k=3", "--draw=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = list(csv.DictReader((report / "top_k.csv").open()))
    assert len(table) == 2 * 3 and [r["rank"] for r in table[:3]] == ["1", "2", "3"]
    for r in table[::3]:
        assert r["gallery"] == r["query"] and abs(float(r["distance"])) < 1e-5
    html = (report / "index.html").read_text()
    assert "unlabelled" in html and "person_" in html
    assert (report / "query_1.png").stat().st_size > 1000

    # Re-ranking from a query .npz: the CSV order follows the re-ranked distances.
    proc = _run("reid_jax.search", f"--gallery={out}", f"--query={out}", f"--out={report}",
                "--rerank", "--rerank_k1=3", "--rerank_k2=2", "--draw=0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = list(csv.DictReader((report / "top_k.csv").open()))
    assert len(table) == 6 * 6 and all(r["query"] == r["gallery"] for r in table[::6])


@pytest.mark.parametrize(
    "case", ["missing_run", "empty_folder", "missing_features", "other_checkpoint"]
)
def test_errors_are_one_line(case, trained, tmp_path):
    workdir = trained[1]
    (tmp_path / "empty").mkdir()
    if case == "missing_run":
        (tmp_path / "in" / "t").mkdir(parents=True)
        (tmp_path / "in" / "t" / "1.png").write_bytes(b"x")
        args = ("reid_jax.embed", f"--workdir={tmp_path}/run", f"--input={tmp_path}/in",
                f"--out={tmp_path}/f.npz")  # fmt: skip
        expected = f"error: run directory {tmp_path}/run does not exist"
    elif case == "empty_folder":
        args = ("reid_jax.embed", f"--workdir={workdir}", f"--input={tmp_path}/empty",
                f"--out={tmp_path}/f.npz")  # fmt: skip
        expected = f"error: no images in {tmp_path}/empty"
    elif case == "missing_features":
        args = ("reid_jax.search", f"--gallery={tmp_path}/g.npz", f"--query={tmp_path}/g.npz",
                f"--out={tmp_path}/r")  # fmt: skip
        expected = f"error: features file {tmp_path}/g.npz does not exist"
    else:
        one = np.zeros((1, 4), np.float32)
        feats = folders.Features(one, np.asarray(["a"]), np.asarray([1]), np.asarray(["a.jpg"]),
                                 str(workdir), 3)  # fmt: skip
        feats.save(tmp_path / "g.npz")
        feats.step = 2
        feats.save(tmp_path / "q.npz")
        args = ("reid_jax.search", f"--gallery={tmp_path}/g.npz", f"--query={tmp_path}/q.npz",
                f"--out={tmp_path}/r")  # fmt: skip
        expected = "error: query features come from"
    proc = _run(*args)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(expected), proc.stderr[-2000:]
