"""Reference ViTs for the parity tests: timm's and open_clip's own torch modules.

timm and open_clip import a few torchvision names at module level (``FrozenBatchNorm2d`` from
torchvision.ops.misc, the transforms in timm.data / open_clip.transform), but no ViT forward uses
them. torchvision has no CPU build beside our torch 2.13.0+cpu on this project's package index
(the PyPI wheel links CUDA torch and fails to import), and ``pip install timm open-clip-torch``
would replace torch with a CUDA build; so the Makefile installs them with --no-deps, and here,
only when ``import torchvision`` fails, a stand-in answers those imports while timm and open_clip
are imported (any name is a placeholder class that raises when instantiated), and is removed from
sys.modules / sys.meta_path right after, so nothing else ever sees it. The reference forwards are
the packages' own code, unchanged.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

import pytest

REASON = (
    "needs torch, timm and open_clip (make test installs them: timm and open-clip-torch with "
    "--no-deps, see the Makefile)"
)


class _Placeholder(type):
    """Metaclass of the stand-in names: attributes are placeholders too (InterpolationMode.X)."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")


def _placeholder(name: str) -> type:
    def fail(*args, **kwargs):
        raise RuntimeError(f"torchvision stand-in (tests only): {name} is not available")

    return _Placeholder(name, (), {"__init__": fail, "__qualname__": name})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class _StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def _import_refs() -> tuple[types.ModuleType, types.ModuleType]:
    """(timm, open_clip), with the torchvision stand-in only while they import if needed."""
    pytest.importorskip("torch", reason=REASON)
    try:
        importlib.import_module("torchvision")
        finder = None
    except Exception:  # ImportError, or a torchvision whose C++ ops do not load
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        finder = _StandInFinder()
        sys.meta_path.insert(0, finder)
    try:
        timm = pytest.importorskip("timm", reason=REASON)
        open_clip = pytest.importorskip("open_clip", reason=REASON)
    finally:
        if finder is not None:
            sys.meta_path.remove(finder)
            for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
                del sys.modules[name]
    return timm, open_clip


@pytest.fixture(scope="session")
def refs() -> tuple[types.ModuleType, types.ModuleType]:
    """(timm, open_clip) modules, or skip with the reason."""
    return _import_refs()
