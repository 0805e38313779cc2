"""Temporal fusion registry: modules mapping per-frame maps [B,T,h,w,C] to a clip feature [B,D].

Contract for every entry: ``module(maps, train) -> (fused [B,D] float32, aux)``. ``aux["weights"]``
is the temporal weighting used: [B,T] for flat methods (uniform 1/T for "mean"), a tuple with one
[B, pairs, 2] array per level for pairwise methods, which then also give ``aux["frame_weights"]``
[B,T] (each frame's effective weight). Each method is also a pure ``jnp`` function
(``mean_pool``, ``max_pool``, ``temporal_attention``, ``temporal_conv``, ``lstm``,
``cosine_center``, ``templet``); the modules only hold the parameters. A module's dataclass
fields are its options, declared nowhere else: ``option_types`` reads them, and
``config.model.fusion_kwargs`` and the ablation's variants are built from that. See docs/fusion.md.
"""

import dataclasses
from typing import Any

import flax.linen as nn

from reid_jax.fusion.attention import TemporalAttentionFusion, temporal_attention
from reid_jax.fusion.conv import TemporalConvFusion, temporal_conv
from reid_jax.fusion.cosine import CosineCenterFusion, cosine_center
from reid_jax.fusion.ops import BRANCH
from reid_jax.fusion.pooling import TemporalAvgPool, TemporalMaxPool, max_pool, mean_pool
from reid_jax.fusion.recurrent import LSTMFusion, lstm
from reid_jax.fusion.templet import TempletFusion, templet
from reid_jax.fusion.two_branch import TwoBranchFusion

FUSIONS: dict[str, type[nn.Module]] = {
    "mean": TemporalAvgPool,
    "max": TemporalMaxPool,
    "temporal_attention": TemporalAttentionFusion,
    "temporal_conv": TemporalConvFusion,
    "lstm": LSTMFusion,
    "cosine_center": CosineCenterFusion,
    "templet": TempletFusion,
    "two_branch": TwoBranchFusion,
}


LINEN_FIELDS = ("parent", "name")  # Linen's own dataclass fields, not options
OPTION_TYPES = (bool, int, float, str)  # what a config placeholder can hold


def _module_options(module: type) -> dict[str, Any]:
    """A fusion module's options from its dataclass fields: name -> type, or for a branch field
    (``ops.branch``) the branch module's own options, as a dict."""
    table = {}
    for f in dataclasses.fields(module):
        if f.name in LINEN_FIELDS:
            continue
        if BRANCH in f.metadata:
            table[f.name] = _module_options(f.metadata[BRANCH])
        elif f.type in OPTION_TYPES:
            table[f.name] = f.type
        else:
            raise TypeError(
                f"{module.__name__}.{f.name}: {f.type!r} cannot be a config option; expected one "
                f"of {[t.__name__ for t in OPTION_TYPES]} or ops.branch(<module>)"
            )
    return table


def option_types(fusion: str) -> dict[str, Any]:
    """The options of the fusion registered as ``fusion``, read from its module's fields (the
    one place they are declared): name -> type, or name -> dict of a branch's options."""
    if fusion not in FUSIONS:
        raise ValueError(f"Unknown fusion {fusion!r}; expected one of {sorted(FUSIONS)}")
    return _module_options(FUSIONS[fusion])


def fusion_options(fusion: str) -> list[str]:
    """The option names (module fields) the fusion registered as ``fusion`` accepts."""
    return sorted(option_types(fusion))


def option_table() -> dict[str, Any]:
    """Every option of every fusion (``config.model.fusion_kwargs``'s keys) with its type; a name
    two fusions declare with different types raises TypeError (one placeholder cannot hold both)."""
    table: dict[str, Any] = {}
    for fusion in sorted(FUSIONS):
        for key, kind in option_types(fusion).items():
            if table.setdefault(key, kind) != kind:
                raise TypeError(f"fusion option {key!r} has two types: {table[key]} and {kind}")
    return table


def option_paths(table: dict[str, Any], prefix: str = "") -> dict[str, type]:
    """A (nested) option table flattened to dotted names: ``{"appearance.tau": float, ...}``."""
    paths = {}
    for key, kind in table.items():
        if isinstance(kind, dict):
            paths.update(option_paths(kind, f"{prefix}{key}."))
        else:
            paths[prefix + key] = kind
    return paths


def resolve_options(
    fusion: str, options: Any = (), where: str = "config.model.fusion_kwargs"
) -> dict[str, Any]:
    """The keyword arguments of the fusion's module from ``options`` (a dict, ConfigDict or
    (key, value) pairs): unset options (None, or a sub-dict of them) dropped, so the module's
    defaults apply; branch sub-dicts resolved the same way into sorted (key, value) pairs and
    lists made tuples, so a model holding them stays hashable. ValueError (one line) naming the
    key, its value and the accepted names for an option the fusion (or branch) does not take."""
    return _resolve(option_types(fusion), options, where, f"fusion {fusion!r}")


def _resolve(table: dict[str, Any], options: Any, where: str, owner: str) -> dict[str, Any]:
    resolved = {}
    for key, value in dict(options).items():
        if _unset(value):
            continue
        kind = table.get(key)
        if kind is None:
            homes = [b for b, t in table.items() if isinstance(t, dict) and key in t]
            hint = f" (an option of its branch: set {where}.{homes[0]}.{key})" if homes else ""
            raise ValueError(
                f"{_first_set(f'{where}.{key}', value)}: {owner} does not take option {key!r}; "
                f"its options are {sorted(option_paths(table))}{hint}"
            )
        if isinstance(kind, dict):
            if not (hasattr(value, "keys") or isinstance(value, tuple)):
                raise ValueError(
                    f"{where}.{key}={value!r}: expected a dict of branch {key!r}'s options "
                    f"{sorted(option_paths(kind))}"
                )
            branch = _resolve(kind, value, f"{where}.{key}", f"branch {key!r} of {owner}")
            value = tuple(sorted(branch.items()))
            if not value:
                continue
        elif isinstance(value, list):
            value = tuple(value)
        resolved[key] = value
    return resolved


def _unset(value: Any) -> bool:
    """None, or a sub-dict of unset values (a branch's placeholders under another fusion)."""
    if hasattr(value, "keys"):
        return all(_unset(value[k]) for k in value.keys())
    return value is None


def _first_set(where: str, value: Any) -> str:
    """``key=value`` of the first set option in ``value`` (descending into sub-dicts): one line."""
    while hasattr(value, "keys"):
        key = next(k for k in sorted(value.keys()) if not _unset(value[k]))
        where, value = f"{where}.{key}", value[key]
    return f"{where}={value!r}"


def make_fusion(fusion: str, /, **kwargs: Any) -> nn.Module:
    """Instantiate the fusion registered as ``fusion``; kwargs (incl. Flax ``name``) go to it.

    Options pass through ``resolve_options``: unset (None) ones are dropped, so the module's
    default applies, and an option the fusion (or its branch) does not have raises ValueError.
    """
    linen = {k: kwargs.pop(k) for k in LINEN_FIELDS if k in kwargs}
    options = resolve_options(fusion, kwargs)  # first: names an unknown fusion
    return FUSIONS[fusion](**options, **linen)


__all__ = [
    "FUSIONS",
    "CosineCenterFusion",
    "LSTMFusion",
    "TemporalAttentionFusion",
    "TemporalAvgPool",
    "TemporalConvFusion",
    "TemporalMaxPool",
    "TempletFusion",
    "TwoBranchFusion",
    "cosine_center",
    "fusion_options",
    "option_paths",
    "option_table",
    "option_types",
    "resolve_options",
    "lstm",
    "make_fusion",
    "max_pool",
    "mean_pool",
    "temporal_attention",
    "temporal_conv",
    "templet",
]
