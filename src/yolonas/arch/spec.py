"""Architecture specs: a YOLO-NAS network described as plain data, with a YAML round trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

BlockType = Literal["qarepvgg", "repvgg", "conv"]


@dataclass
class StageSpec:
    """One backbone stage: a stride-2 downsample block, then a CSP layer of bottlenecks."""

    out_channels: int
    num_blocks: int
    hidden_channels: int
    concat_intermediates: bool = False
    block: BlockType = "qarepvgg"


@dataclass
class BackboneSpec:
    stem_channels: int = 48
    stages: list[StageSpec] = field(default_factory=list)
    spp_channels: int = 768
    spp_kernels: tuple[int, ...] = (5, 9, 13)
    stem_block: BlockType = "qarepvgg"


@dataclass
class NeckStageSpec:
    """One PAN neck stage (up = top-down, down = bottom-up)."""

    out_channels: int
    num_blocks: int
    hidden_channels: int
    block: BlockType = "qarepvgg"
    concat_intermediates: bool = False


@dataclass
class NeckSpec:
    """Two top-down stages (fusing three scales each) then two bottom-up stages."""

    up1: NeckStageSpec
    up2: NeckStageSpec
    down1: NeckStageSpec
    down2: NeckStageSpec


@dataclass
class HeadSpec:
    """Decoupled DFL heads at strides 8/16/32; `widths` are the per-level inner widths."""

    widths: tuple[int, int, int] = (64, 128, 256)
    reg_max: int = 16
    strides: tuple[int, int, int] = (8, 16, 32)
    grid_cell_scale: float = 5.0
    grid_cell_offset: float = 0.5


@dataclass
class ArchSpec:
    """A whole detector: backbone, neck and head, plus BatchNorm settings."""

    name: str
    backbone: BackboneSpec
    neck: NeckSpec
    head: HeadSpec = field(default_factory=HeadSpec)
    in_channels: int = 3
    bn_eps: float = 1e-3
    bn_momentum: float = 0.03

    def to_dict(self) -> dict:
        """The spec as plain Python types (lists instead of tuples), ready for YAML or JSON."""
        return plain_types(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> ArchSpec:
        """Inverse of `to_dict`; unknown keys raise so that typos in spec files do not pass silently."""
        d = dict(d)
        bb = dict(d.pop("backbone"))
        bb["stages"] = [StageSpec(**s) for s in bb.get("stages", [])]
        if "spp_kernels" in bb:
            bb["spp_kernels"] = tuple(bb["spp_kernels"])
        neck = {k: NeckStageSpec(**v) for k, v in d.pop("neck").items()}
        head = dict(d.pop("head", {}))
        for key in ("widths", "strides"):
            if key in head:
                head[key] = tuple(head[key])
        return cls(backbone=BackboneSpec(**bb), neck=NeckSpec(**neck), head=HeadSpec(**head), **d)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Write the spec as YAML (to `path` when given) and return the text."""
        text = yaml.safe_dump({"arch": self.to_dict()}, sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> ArchSpec:
        """Read a spec from a YAML file (or YAML text) written by `to_yaml`."""
        text = str(path_or_text)
        if "\n" not in text:  # a path, not YAML text
            text = Path(text).read_text()
        data = yaml.safe_load(text)
        if not isinstance(data, dict) or "arch" not in data:
            raise ValueError(f"{path_or_text}: not an architecture spec (no top-level 'arch' key)")
        return cls.from_dict(data["arch"])


def plain_types(x):
    """Nested dicts, lists and tuples as dicts and lists only: what YAML and JSON write without tags."""
    if isinstance(x, dict):
        return {k: plain_types(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_types(v) for v in x]
    return x


def _yolo_nas(
    name: str,
    hidden: tuple[int, int, int, int],
    concat: tuple[bool, bool, bool, bool],
    neck: tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]],
    head_widths: tuple[int, int, int],
) -> ArchSpec:
    outs, blocks = (96, 192, 384, 768), (2, 3, 5, 2)
    stages = [StageSpec(o, n, h, c) for o, n, h, c in zip(outs, blocks, hidden, concat)]
    (n1, h1), (n2, h2), (n3, h3), (n4, h4) = neck
    return ArchSpec(
        name=name,
        backbone=BackboneSpec(stem_channels=48, stages=stages, spp_channels=768),
        neck=NeckSpec(
            up1=NeckStageSpec(192, n1, h1),
            up2=NeckStageSpec(96, n2, h2),
            down1=NeckStageSpec(192, n3, h3, block="conv"),
            down2=NeckStageSpec(384, n4, h4, block="conv"),
        ),
        head=HeadSpec(widths=head_widths),
    )


def yolo_nas_s() -> ArchSpec:
    """YOLO-NAS-S as published by super-gradients."""
    return _yolo_nas("yolo_nas_s", (32, 64, 96, 192), (False,) * 4,
                     ((2, 64), (2, 48), (2, 64), (2, 64)), (64, 128, 256))


def yolo_nas_m() -> ArchSpec:
    """YOLO-NAS-M as published by super-gradients."""
    return _yolo_nas("yolo_nas_m", (64, 128, 256, 384), (True, True, True, False),
                     ((2, 192), (3, 64), (2, 192), (3, 256)), (96, 192, 384))


def yolo_nas_l() -> ArchSpec:
    """YOLO-NAS-L as published by super-gradients."""
    return _yolo_nas("yolo_nas_l", (96, 128, 256, 512), (True,) * 4,
                     ((4, 128), (4, 128), (4, 128), (4, 256)), (128, 256, 512))


def yolo_nas_tiny() -> ArchSpec:
    """A very small spec of the same family, for tests, demos and CPU smoke runs (not published)."""
    stages = [StageSpec(32, 1, 16), StageSpec(64, 1, 32), StageSpec(96, 1, 48), StageSpec(128, 1, 64)]
    return ArchSpec(
        name="yolo_nas_tiny",
        backbone=BackboneSpec(stem_channels=16, stages=stages, spp_channels=128),
        neck=NeckSpec(
            up1=NeckStageSpec(64, 1, 32),
            up2=NeckStageSpec(32, 1, 16),
            down1=NeckStageSpec(64, 1, 32, block="conv"),
            down2=NeckStageSpec(128, 1, 64, block="conv"),
        ),
        head=HeadSpec(widths=(32, 64, 128)),
    )


def with_block(spec: ArchSpec, old: BlockType, new: BlockType, name: str | None = None) -> ArchSpec:
    """A copy of `spec` with every `old` block (stem, stages, neck) made a `new` one, e.g. QARepVGG -> RepVGG."""
    d = spec.to_dict()
    d["name"] = name or f"{spec.name}_{new}"
    bb = d["backbone"]
    bb["stem_block"] = new if bb["stem_block"] == old else bb["stem_block"]
    for stage in [*bb["stages"], *d["neck"].values()]:
        stage["block"] = new if stage["block"] == old else stage["block"]
    return ArchSpec.from_dict(d)


PUBLISHED = {"yolo_nas_s": yolo_nas_s, "yolo_nas_m": yolo_nas_m, "yolo_nas_l": yolo_nas_l}
"""The published variants by name, for `yolonas.load("yolo_nas_s")` and the CLI."""

BUILTIN = {**PUBLISHED, "yolo_nas_tiny": yolo_nas_tiny}
