"""Where the temporal layers go in an inflated ResNet: placement strings, presets, config keys.

A placement is a comma-separated list of ``stage.block`` (stage 1-4 as torchvision's
``layer1``-``layer4``, block 0-based): ``"2.0,2.2,3.0,3.2,3.4"`` is where AP3D's ResNet-50 puts
its AP3D convs (guxinqian/AP3D ``models/ResNet.py``, commit 84bd12a: ``c3d_idx = [[],[0, 2],
[0, 2, 4],[]]``) and ``"2.1,2.3,3.1,3.3,3.5"`` where AP3DNLResNet50 adds non-local blocks
(``nl_idx``), each after the named block. The presets generalise that rule to any depth: temporal
convs in the even-indexed blocks of stages 2 and 3, non-local blocks after the odd-indexed ones.
"""

from __future__ import annotations

from typing import Any

from reid_jax.models.ap3d import TEMPORAL_KINDS

Placement = tuple[tuple[int, int], ...]

# config.model.temporal presets (the ablation's ``backbone=<name>``): kind, non-local on/off.
PRESETS: dict[str, tuple[str, bool]] = {
    "c2d": ("none", False),
    "c3d": ("c3d", False),
    "i3d": ("i3d", False),
    "ap3d": ("ap3d", False),
    "ap3d_nl": ("ap3d", True),
    "c2d_nl": ("none", True),
}


def parse_placement(text: str, stage_sizes: tuple[int, ...], key: str) -> Placement:
    """``"2.0,3.1"`` -> ((2, 0), (3, 1)); ValueError naming ``key`` for a bad or absent block."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        stage, sep, block = part.partition(".")
        if not (sep and stage.isdigit() and block.isdigit()):
            raise ValueError(f"{key}={text!r}: {part!r} is not 'stage.block' (e.g. '2.0')")
        s, b = int(stage), int(block)
        if not 1 <= s <= len(stage_sizes) or b >= stage_sizes[s - 1]:
            raise ValueError(
                f"{key}={text!r}: block {part} does not exist; stages 1-{len(stage_sizes)} have "
                f"{list(stage_sizes)} blocks"
            )
        if (s, b) in out:
            raise ValueError(f"{key}={text!r}: block {part} given twice")
        out.append((s, b))
    return tuple(sorted(out))


def preset_placements(stage_sizes: tuple[int, ...]) -> tuple[str, str]:
    """(temporal, non-local) placement strings of AP3D's rule for these stage sizes."""
    temporal = [f"{s}.{b}" for s in (2, 3) for b in range(0, stage_sizes[s - 1], 2)]
    nonlocal_ = [f"{s}.{b}" for s in (2, 3) for b in range(1, stage_sizes[s - 1], 2)]
    return ",".join(temporal), ",".join(nonlocal_)


def preset(name: str, stage_sizes: tuple[int, ...]) -> dict[str, str]:
    """config.model.temporal values {kind, blocks, nonlocal_blocks} of a preset."""
    if name not in PRESETS:
        raise ValueError(f"backbone preset {name!r}; expected one of {sorted(PRESETS)}")
    kind, with_nl = PRESETS[name]
    temporal, nonlocal_ = preset_placements(stage_sizes)
    return {
        "kind": kind,
        "blocks": temporal if kind != "none" else "",
        "nonlocal_blocks": nonlocal_ if with_nl else "",
    }


def resnet_fields(temporal: Any, stage_sizes: tuple[int, ...]) -> dict[str, Any]:
    """ResNet fields from config.model.temporal (a mapping); {} for the plain 2-D ResNet.

    Keys: kind ("none" | "c3d" | "i3d" | "ap3d"), blocks, nonlocal_blocks (placements),
    time_dim, temperature, contrastive_att.
    """
    kind = temporal["kind"]
    if kind not in TEMPORAL_KINDS:
        raise ValueError(f"config.model.temporal.kind={kind!r}; expected one of {TEMPORAL_KINDS}")
    blocks = parse_placement(temporal["blocks"], stage_sizes, "config.model.temporal.blocks")
    nl = parse_placement(
        temporal["nonlocal_blocks"], stage_sizes, "config.model.temporal.nonlocal_blocks"
    )
    if kind != "none" and not blocks:
        raise ValueError(
            f"config.model.temporal.kind={kind!r} but config.model.temporal.blocks is empty; "
            "name the blocks, e.g. '2.0,2.2,3.0,3.2,3.4' (AP3D's ResNet-50)"
        )
    if kind == "none" and blocks:
        raise ValueError(
            f"config.model.temporal.blocks={temporal['blocks']!r} but kind='none'; set "
            f"config.model.temporal.kind to one of {TEMPORAL_KINDS[1:]}"
        )
    time_dim = int(temporal["time_dim"])
    if time_dim < 3 or time_dim % 2 == 0:
        raise ValueError(f"config.model.temporal.time_dim={time_dim}; expected an odd number >= 3")
    if kind == "none" and not nl:
        return {}
    return {
        "temporal": kind,
        "temporal_blocks": blocks,
        "nonlocal_blocks": nl,
        "time_dim": time_dim,
        "temperature": float(temporal["temperature"]),
        "contrastive_att": bool(temporal["contrastive_att"]),
    }
