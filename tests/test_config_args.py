"""Config arguments (``--config file.py:key=value,flag``): parsed, typed, unknown ones rejected,
and reported by the entry points as one ``error:`` line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from absl import flags
from ml_collections import config_flags

from reid_jax import logs
from reid_jax.config_args import parse_arg
from reid_jax.config_base import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(fusion=("tp", "max"), tiny=False, width=8, lr=0.5, name="x")


def test_defaults_and_values():
    a = parse_arg("", "/somewhere/c.py", **SPEC)
    assert vars(a) == dict(fusion="tp", tiny=False, width=8, lr=0.5, name="x")
    a = parse_arg("fusion=max,tiny,width=16,lr=1e-3,name=y", "c.py", **SPEC)
    assert vars(a) == dict(fusion="max", tiny=True, width=16, lr=1e-3, name="y")
    assert parse_arg(None, "c.py", **SPEC).tiny is False
    assert parse_arg("tiny=False", "c.py", **SPEC).tiny is False
    assert parse_arg("tiny=true", "c.py", **SPEC).tiny is True


@pytest.mark.parametrize(
    "arg, message",
    [
        ("tiyn", "c.py: unknown config argument 'tiyn' (in 'tiyn'); accepted: fusion, tiny, width"),
        ("fusion=mean", "c.py: fusion='mean': expected one of tp, max"),
        ("fusion", "c.py: config argument 'fusion' needs a value (fusion=...)"),
        ("tiny=yes", "c.py: tiny='yes': expected true or false"),
        ("width=wide", "c.py: width='wide': expected int"),
        ("lr=fast", "c.py: lr='fast': expected float"),
        ("tiny,tiny=false", "c.py: config argument 'tiny' given twice (in 'tiny,tiny=false')"),
    ],
)
def test_bad_arguments_are_one_line_naming_file_key_and_accepted(arg, message):
    with pytest.raises(ConfigError) as e:
        parse_arg(arg, "/configs/c.py", **SPEC)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_config_without_arguments_rejects_any():
    assert vars(parse_arg("", "d.py")) == {}
    with pytest.raises(ConfigError, match=r"^d.py takes no config argument, got 'tiny'$"):
        parse_arg("tiny", "/configs/d.py")


def test_parse_flags_reports_a_config_error_as_one_line(monkeypatch):
    """logs.parse_flags (the entry points' flags parser) turns the ConfigError raised inside
    --config's get_config into fail(message, 2); other flag errors keep absl's handling."""
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=fv)
    monkeypatch.setattr(flags, "FLAGS", fv)
    calls = []
    monkeypatch.setattr(logs, "fail", lambda message, code: calls.append((message, code)))
    with pytest.raises(flags.Error):  # re-raised only because the patched fail returns
        logs.parse_flags(["prog", f"--config={ROOT}/configs/mars_r50.py:fusion=avg"])
    assert calls == [(f"mars_r50.py: fusion='avg': expected one of {_fusions()}", 2)]
    assert logs.parse_flags(["prog", f"--config={ROOT}/configs/mars_r50.py:tiny"]) == ["prog"]
    assert fv.config.model.arch == "resnet18"


def _fusions() -> str:
    return "tp, max, temporal_attention, temporal_conv, lstm, cosine_center, templet, two_branch"


@pytest.mark.parametrize("module", ["reid_jax.main", "reid_jax.evaluate"])
def test_cli_bad_config_argument_is_one_error_line_and_exit_2(module, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", module, "--config", "configs/mars_r50.py:fusion=templet,tiyn",
         "--workdir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    expected = (
        "error: mars_r50.py: unknown config argument 'tiyn' (in 'fusion=templet,tiyn'); "
        "accepted: fusion, tiny\n"
    )
    assert proc.stderr.endswith(expected) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()
