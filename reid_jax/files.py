"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

A leaf module (imports nothing from reid_jax), so every room can use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Calls ``write(tmp)`` on a hidden temporary path beside ``path``, then renames it over it.

    The temporary name keeps ``path``'s suffix (``np.savez`` and ``savefig`` go by it) and starts
    with a dot (globs such as ``step_*.json`` do not see it). If ``write`` raises, the temporary
    file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes ``text`` to ``path`` atomically (``atomic_write`` with ``Path.write_text``)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))
