"""reid_jax.files: the atomic write keeps the old file when the write fails."""

import numpy as np
import pytest

from reid_jax import files


def test_atomic_write_text_replaces_content(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    assert files.atomic_write_text(path, "new") == path
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "step_1.json"
    path.write_text("old")

    def half_write(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(path, half_write)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["step_1.json"]


def test_temporary_keeps_suffix_and_is_hidden(tmp_path):
    """np.savez appends .npz to any other name; a glob like step_*.json must not see the temp."""
    seen = []

    def write(tmp):
        seen.append(tmp)
        np.savez(tmp, x=np.arange(3))
        assert tmp.is_file() and list(tmp_path.glob("step_*.npz")) == []

    path = files.atomic_write(tmp_path / "step_2.npz", write)
    assert seen[0].suffix == ".npz" and seen[0].name.startswith(".")
    with np.load(path) as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["step_2.npz"]
