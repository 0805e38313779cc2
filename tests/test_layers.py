"""The rooms of reid_jax import only downwards (docs/architecture.md): a module may import its own
room and the rooms of lower layers; rooms of one layer (train and evaluation, say) never import
each other. Read from the source with ``ast``, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "reid_jax"

# Layer of each room (a sub-package, or a top-level module), lowest first.
LAYERS: dict[str, int] = {
    "files": 0, "parallel": 0, "distributed": 0,  # leaves: no reid_jax import
    "data": 1,
    "fusion": 2,
    "models": 3,
    "train": 4, "evaluation": 4,  # siblings: neither imports the other
    "config_base": 5,  # checks options against the fusion modules' fields
    "config_args": 6, "run": 6,  # the one run set-up
    "logs": 7,
    "jobs": 8,  # training, the evaluation job, trials
    "inference": 9, "experiments": 9, "tools": 9,
    "main": 10, "evaluate": 10, "export": 10, "embed": 10, "search": 10,  # command lines
}  # fmt: skip


def _room(module: str) -> str:
    """``reid_jax.train.step`` -> ``train``; ``reid_jax`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> set[str]:
    """The reid_jax modules ``path`` imports (``from reid_jax import x`` counts as reid_jax.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "reid_jax":
                found |= {f"reid_jax.{a.name}" for a in node.names}
            elif node.module.startswith("reid_jax."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("reid_jax.")}
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(p for p in rel.parts if p != "__init__"), path))
    return out


def upward_imports(layers: dict[str, int]) -> list[str]:
    """``"importer -> imported"`` for every import of a higher layer or of a sibling room."""
    bad = []
    for module, path in _modules():
        room = _room(module)
        if not room:
            continue
        for imported in _imports(path):
            other = _room(imported)
            if other and other != room and layers[other] >= layers[room]:
                bad.append(f"{module} -> {imported}")
    return bad


def test_every_room_has_a_layer():
    rooms = {_room(m) for m, _ in _modules()} - {""}
    assert rooms == set(LAYERS), "add the new room to LAYERS (and docs/architecture.md)"


def test_imports_point_down_only():
    assert upward_imports(LAYERS) == []


def test_the_check_finds_an_upward_import():
    """The check itself can fail: with evaluation above run, run's import of it is upward."""
    swapped = dict(LAYERS, evaluation=LAYERS["run"])
    assert "reid_jax.run -> reid_jax.evaluation.metrics" in upward_imports(swapped)
    with pytest.raises(KeyError):
        upward_imports({k: v for k, v in LAYERS.items() if k != "data"})
