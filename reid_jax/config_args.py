"""The argument of a config file (``--config configs/mars_r50.py:fusion=templet,tiny``), parsed.

In the style of big_vision's ``parse_arg`` (google-research/big_vision, commit 33f66f16,
``big_vision/configs/common.py``): comma-separated ``key=value`` items, a bare ``key`` meaning
``key=true`` for a boolean, the value typed by its default; unlike it, an unknown key or a bad
value is a ``ConfigError`` (one line naming the file, the key and what is accepted), so a typo
never silently runs the default recipe.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from reid_jax.config_base import ConfigError

_BOOLS = {"true": True, "false": False}


def _value(file: str, key: str, raw: str, default: Any) -> Any:
    """``raw`` converted to ``default``'s type (a tuple default: one of its strings)."""
    if isinstance(default, tuple):
        if raw not in default:
            raise ConfigError(f"{file}: {key}={raw!r}: expected one of {', '.join(default)}")
        return raw
    if isinstance(default, bool):
        if raw.lower() not in _BOOLS:
            raise ConfigError(f"{file}: {key}={raw!r}: expected true or false")
        return _BOOLS[raw.lower()]
    try:
        return type(default)(raw)
    except ValueError:
        raise ConfigError(f"{file}: {key}={raw!r}: expected {type(default).__name__}") from None


def parse_arg(arg: str | None, file: str | Path, **defaults: Any) -> types.SimpleNamespace:
    """The config argument ``arg`` as attributes, one per keyword of ``defaults``.

    ``file`` is the config file (its ``__file__``), named in errors. Each default gives its key's
    type: a bool (``tiny`` alone means ``tiny=true``), an int, float or str, or a tuple of the
    accepted strings whose first is the default (``fusion=("tp", "max", ...)``). ConfigError
    for a key not in ``defaults``, a key given twice or a value of the wrong kind.
    """
    name = Path(file).name
    if arg and not defaults:
        raise ConfigError(f"{name} takes no config argument, got {arg!r}")
    values = {k: v[0] if isinstance(v, tuple) else v for k, v in defaults.items()}
    given: set[str] = set()
    for item in (arg or "").split(","):
        key, eq, raw = item.strip().partition("=")
        if not key:
            continue
        if key not in defaults:
            accepted = ", ".join(defaults)
            raise ConfigError(
                f"{name}: unknown config argument {key!r} (in {arg!r}); accepted: {accepted}"
            )
        if key in given:
            raise ConfigError(f"{name}: config argument {key!r} given twice (in {arg!r})")
        given.add(key)
        if not eq and not isinstance(defaults[key], bool):
            raise ConfigError(f"{name}: config argument {key!r} needs a value ({key}=...)")
        values[key] = _value(name, key, raw if eq else "true", defaults[key])
    return types.SimpleNamespace(**values)
