"""Ablation variants as strings: ``fusion[:option=value[:option=value...]]``.

``cosine_center:tau=0.1:weighting=angle`` is the cosine-to-centre fusion with two options set;
values are typed by the fusion module's fields (``fusion.option_types``) so a variant is exactly
what ``--config.model.fusion_kwargs.<option>=<value>`` would give one training job; a branch's
options are dotted as there (``two_branch:appearance.tau=0.1:motion.rescale=true``). The
pseudo-option ``backbone=<preset>`` (reid_jax.models.inflated.PRESETS: c2d, c3d, i3d, ap3d,
ap3d_nl, c2d_nl) sets ``config.model.temporal`` by AP3D's placement rule for the config's arch
instead: ``mean:backbone=ap3d`` is temporal average pooling on an AP3D backbone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reid_jax.fusion import option_paths, option_types
from reid_jax.models import inflated
from reid_jax.models.resnet import RESNETS

_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One ablation arm: its label (the string it was parsed from), fusion and typed options."""

    label: str
    fusion: str
    options: tuple[tuple[str, Any], ...] = ()
    backbone: str = ""  # a temporal preset (inflated.PRESETS); "" = the base config's backbone

    @property
    def dirname(self) -> str:
        """A folder name for the variant's runs (``:`` is not portable in paths)."""
        return self.label.replace(":", "-")


def _typed(option: str, kind: type, text: str, where: str) -> Any:
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{where}: option {option}={text!r} is not a boolean (true/false)")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(
            f"{where}: option {option}={text!r} is not a valid {kind.__name__}"
        ) from None


def parse_variant(text: str) -> Variant:
    """``"templet:alpha_max=4"`` -> Variant; ValueError naming the variant and what is wrong."""
    where = f"variant {text!r}"
    fusion, *parts = text.strip().split(":")
    try:
        accepted = option_paths(option_types(fusion))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    options, backbone = {}, ""
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{where}: expected option=value after ':', got {part!r}")
        if key == "backbone":
            if value not in inflated.PRESETS or backbone:
                raise ValueError(f"{where}: backbone={value!r} (given once; one of "
                                 f"{sorted(inflated.PRESETS)})")  # fmt: skip
            backbone = value
            continue
        if key not in accepted:
            raise ValueError(f"{where}: fusion {fusion!r} has no option {key!r}; its options "
                             f"are {sorted(accepted)}")  # fmt: skip
        if key in options:
            raise ValueError(f"{where}: option {key!r} given twice")
        options[key] = _typed(key, accepted[key], value, where)
    options = tuple(sorted(options.items()))
    return Variant(label=text.strip(), fusion=fusion, options=options, backbone=backbone)


def parse_variants(text: str) -> list[Variant]:
    """A comma-separated list of variants; duplicates are an error (they would share a folder)."""
    variants = [parse_variant(t) for t in text.split(",") if t.strip()]
    if not variants:
        raise ValueError(f"--fusions={text!r} names no variant")
    labels = [v.label for v in variants]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"--fusions names {dupes} more than once")
    return variants


def apply_variant(config: Any, variant: Variant) -> None:
    """Set ``config.model.fusion`` and its options in place (other options stay unset), and
    ``config.model.temporal`` when the variant names a backbone preset (a ResNet arch only)."""
    config.model.fusion = variant.fusion
    if variant.backbone:
        if config.model.arch not in RESNETS:
            raise ValueError(f"variant {variant.label!r}: backbone presets need a ResNet arch, "
                             f"not config.model.arch={config.model.arch!r}")  # fmt: skip
        stage_sizes = RESNETS[config.model.arch].keywords["stage_sizes"]
        config.model.temporal.update(inflated.preset(variant.backbone, stage_sizes))
    for key, value in variant.options:  # "appearance.tau": fusion_kwargs.appearance.tau
        *branches, option = key.split(".")
        node = config.model.fusion_kwargs
        for name in branches:
            node = node[name]
        setattr(node, option, value)
