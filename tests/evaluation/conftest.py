"""Helpers of the evaluation tests. The tiny SynthMARS config and the shared session fixtures
(``tiny_data``, ``trained``) live in tests/conftest.py, so the inference tests reuse the same
trained run instead of training their own."""

from ..conftest import ROOT, tiny_config

__all__ = ["ROOT", "tiny_config"]
