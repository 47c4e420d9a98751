"""The search space: YOLO-NAS-like ArchSpecs as a fixed set of named choices, sampled by an Optuna trial.

A candidate is an `ArchSpec`. Its encoding is a flat dict of parameter name -> choice (what Optuna stores),
so a spec can be enqueued as a seed, and a stored trial decodes back to the same spec.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from fractions import Fraction

from yolonas.arch.spec import (
    BUILTIN,
    ArchSpec,
    BackboneSpec,
    HeadSpec,
    NeckSpec,
    NeckStageSpec,
    StageSpec,
)
from yolonas.errors import InputError

STAGES = ("stage1", "stage2", "stage3", "stage4")
NECK_STAGES = ("up1", "up2", "down1", "down2")
HEAD_BASE = (128, 256, 512)  # head widths at multiplier 1.0 (YOLO-NAS-L's)


@dataclass(frozen=True)
class SearchSpace:
    """The choices per knob. Backbone hidden widths are fractions of the stage width (S/M/L use 1/4..1).

    Block counts (inclusive ranges), hidden ratios, concat choices and neck hidden widths are given either once
    for every stage or per stage (a tuple of four); `around` builds the per-stage form."""

    stem_widths: tuple[int, ...] = (16, 24, 32, 48, 64)
    stage_widths: tuple[tuple[int, ...], ...] = (
        (32, 48, 64, 96, 128),
        (64, 96, 128, 192, 256),
        (96, 128, 192, 256, 384),
        (128, 192, 256, 384, 512, 768),
    )
    stage_blocks: tuple = (1, 6)
    hidden_ratios: tuple = ("1/4", "1/3", "1/2", "2/3", "3/4", "1")
    concat: tuple = (False, True)
    neck_widths: tuple[tuple[int, ...], ...] = (
        (64, 96, 128, 192, 256),  # up1
        (32, 48, 64, 96, 128),  # up2
        (64, 96, 128, 192, 256),  # down1
        (128, 192, 256, 384, 512),  # down2
    )
    neck_blocks: tuple = (1, 4)
    neck_hidden: tuple = (16, 32, 48, 64, 96, 128, 192, 256)
    head_mults: tuple[float, ...] = (0.25, 0.375, 0.5, 0.75, 1.0)
    imgsz: tuple[int, ...] = (320,)  # searched only when there is more than one

    def __post_init__(self) -> None:
        for name in ("stage_blocks", "hidden_ratios", "concat", "neck_blocks", "neck_hidden"):
            value = tuple(getattr(self, name))
            if not isinstance(value[0], tuple):  # one choice set for every stage
                value = (value,) * 4
            object.__setattr__(self, name, tuple(tuple(v) for v in value))

    @classmethod
    def around(cls, spec: ArchSpec, steps: int = 1, imgsz: tuple[int, ...] = (320,)) -> SearchSpace:
        """The neighbourhood of `spec` in the default grid: every width, hidden width, block count and head
        multiplier within `steps` grid steps of its own (concat kept as it is). Searching it trims or reshapes a
        known-good network for a target instead of searching the whole space."""
        if steps < 1:
            raise InputError(f"the neighbourhood needs at least 1 step, got {steps}")
        grid = cls()
        params = encode(spec, grid)  # InputError when the spec is not a point of the default space

        def near(values: tuple, value) -> tuple:
            i = values.index(value)
            return values[max(0, i - steps): i + steps + 1]

        def blocks(n: int, bounds: tuple[int, int]) -> tuple[int, int]:
            return max(bounds[0], n - steps), min(bounds[-1], n + steps)

        return cls(
            stem_widths=near(grid.stem_widths, params["stem"]),
            stage_widths=tuple(near(w, params[f"{s}.width"]) for s, w in zip(STAGES, grid.stage_widths)),
            stage_blocks=tuple(blocks(params[f"{s}.blocks"], b) for s, b in zip(STAGES, grid.stage_blocks)),
            hidden_ratios=tuple(near(r, params[f"{s}.hidden"]) for s, r in zip(STAGES, grid.hidden_ratios)),
            concat=tuple((params[f"{s}.concat"],) for s in STAGES),
            neck_widths=tuple(near(w, params[f"{s}.width"]) for s, w in zip(NECK_STAGES, grid.neck_widths)),
            neck_blocks=tuple(blocks(params[f"{s}.blocks"], b) for s, b in zip(NECK_STAGES, grid.neck_blocks)),
            neck_hidden=tuple(near(h, params[f"{s}.hidden"]) for s, h in zip(NECK_STAGES, grid.neck_hidden)),
            head_mults=near(grid.head_mults, params["head.mult"]),
            imgsz=tuple(imgsz),
        )

    def choices(self) -> dict[str, tuple]:
        """Every parameter name with its categorical choices (block counts: every int of the range)."""
        c: dict[str, tuple] = {"stem": self.stem_widths}
        for i, (name, widths) in enumerate(zip(STAGES, self.stage_widths)):
            lo, hi = self.stage_blocks[i][0], self.stage_blocks[i][-1]
            c |= {f"{name}.width": widths, f"{name}.blocks": tuple(range(lo, hi + 1)),
                  f"{name}.hidden": self.hidden_ratios[i], f"{name}.concat": self.concat[i]}
        for i, (name, widths) in enumerate(zip(NECK_STAGES, self.neck_widths)):
            lo, hi = self.neck_blocks[i][0], self.neck_blocks[i][-1]
            c |= {f"{name}.width": widths, f"{name}.blocks": tuple(range(lo, hi + 1)),
                  f"{name}.hidden": self.neck_hidden[i]}
        c["head.mult"] = self.head_mults
        if len(self.imgsz) > 1:
            c["imgsz"] = self.imgsz
        return c

    def size(self) -> int:
        """How many distinct candidates the space holds."""
        n = 1
        for values in self.choices().values():
            n *= len(values)
        return n


def _hidden(width: int, ratio: str) -> int:
    # Rounded to a multiple of 8 (at least 8): every S/M/L hidden width is an exact fraction of its stage width.
    return max(8, round(width * Fraction(ratio) / 8) * 8)


def decode(params: dict, name: str | None = None) -> ArchSpec:
    """The ArchSpec that an encoding (parameter name -> choice, as `encode` or a trial gives) describes."""
    try:
        stages = [StageSpec(int(params[f"{s}.width"]), int(params[f"{s}.blocks"]),
                            _hidden(int(params[f"{s}.width"]), str(params[f"{s}.hidden"])),
                            bool(params[f"{s}.concat"])) for s in STAGES]
        neck = {s: NeckStageSpec(int(params[f"{s}.width"]), int(params[f"{s}.blocks"]), int(params[f"{s}.hidden"]),
                                 block="qarepvgg" if s.startswith("up") else "conv") for s in NECK_STAGES}
        mult = float(params["head.mult"])
        stem = int(params["stem"])
    except KeyError as e:
        raise InputError(f"search encoding lacks parameter {e.args[0]!r}") from None
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise InputError(f"search encoding has a bad value ({e})") from None
    spec = ArchSpec(
        name="",
        # The SPP keeps the last stage's width, as in every published variant.
        backbone=BackboneSpec(stem_channels=stem, stages=stages, spp_channels=stages[-1].out_channels),
        neck=NeckSpec(**neck),
        head=HeadSpec(widths=tuple(round(b * mult) for b in HEAD_BASE)),
    )
    spec.name = name or f"nas_{spec_hash(spec)}"
    return spec


def spec_hash(spec: ArchSpec) -> str:
    """A short hash of everything but the name: equal architectures get equal hashes."""
    d = spec.to_dict()
    d.pop("name")
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def encode(spec: ArchSpec, space: SearchSpace, imgsz: int | None = None) -> dict:
    """The encoding of `spec` in `space`; raises InputError when the spec is not a point of the space."""
    params: dict = {"stem": spec.backbone.stem_channels}
    bb = spec.backbone
    for i, (name, st) in enumerate(zip(STAGES, bb.stages)):
        ratio = next((r for r in space.hidden_ratios[i] if _hidden(st.out_channels, r) == st.hidden_channels), None)
        params |= {f"{name}.width": st.out_channels, f"{name}.blocks": st.num_blocks, f"{name}.hidden": ratio,
                   f"{name}.concat": st.concat_intermediates}
    for name in NECK_STAGES:
        ns: NeckStageSpec = getattr(spec.neck, name)
        params |= {f"{name}.width": ns.out_channels, f"{name}.blocks": ns.num_blocks,
                   f"{name}.hidden": ns.hidden_channels}
    mults = [w / b for w, b in zip(spec.head.widths, HEAD_BASE)]
    params["head.mult"] = mults[0] if len(set(mults)) == 1 else None
    choices = space.choices()
    if "imgsz" in choices:
        params["imgsz"] = imgsz
    bad = [f"{k}={params.get(k)!r}" for k, values in choices.items() if params.get(k) not in values]
    if bad:
        raise InputError(f"spec {spec.name!r} is not in the search space: {', '.join(bad)}")
    if len(bb.stages) != 4:
        raise InputError(f"spec {spec.name!r} is not in the search space: {len(bb.stages)} backbone stages, not 4")
    rebuilt = decode(params, spec.name)
    rebuilt.bn_eps, rebuilt.bn_momentum, rebuilt.in_channels = spec.bn_eps, spec.bn_momentum, spec.in_channels
    if rebuilt.to_dict() != spec.to_dict():  # fixed parts: blocks, SPP, head reg_max/strides, neck block types
        diff = _first_difference(rebuilt.to_dict(), spec.to_dict())
        raise InputError(f"spec {spec.name!r} is not in the search space: {diff} is fixed in the space")
    return params


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in a:
            if a[k] != b.get(k):
                return _first_difference(a[k], b.get(k), f"{path}.{k}" if path else k)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return f"{path} ({b!r}; the space has {a!r})"


def contains(space: SearchSpace, spec: ArchSpec) -> bool:
    """Whether `spec` is a point of `space`."""
    try:
        encode(spec, space, space.imgsz[0])
    except InputError:
        return False
    return True


def sample(trial, space: SearchSpace) -> tuple[ArchSpec, int]:
    """(spec, input size) chosen by an Optuna trial: one categorical per knob, block counts as integers."""
    params = {}
    for name, values in space.choices().items():
        if name.endswith(".blocks"):  # ordered: NSGA-II's crossover may then mix counts sensibly
            params[name] = trial.suggest_int(name, values[0], values[-1])
        else:
            params[name] = trial.suggest_categorical(name, values)
    return decode(params), int(params.get("imgsz", space.imgsz[0]))


def seeds(space: SearchSpace) -> dict[str, dict]:
    """The encodings of the built-in specs (S, M, L, tiny) that are points of `space`, by name."""
    out = {}
    for name, make in BUILTIN.items():
        spec = make()
        if contains(space, spec):
            out[name] = encode(spec, space, space.imgsz[0])
    return out


def calibration_specs(space: SearchSpace, n_random: int = 3, seed: int = 0) -> list[ArchSpec]:
    """Distinct networks of `space` to calibrate the latency sum on: its lower- and upper-quartile corners (every
    knob at a quarter and three quarters of its choices) and up to `n_random` random points, to span its range."""
    choices = space.choices()
    rng = random.Random(seed)
    specs: dict[str, ArchSpec] = {}
    for q in (0.25, 0.75):
        spec = decode({k: v[round(q * (len(v) - 1))] for k, v in choices.items()})
        specs.setdefault(spec_hash(spec), spec)
    for _ in range(20 * n_random):  # a small space may hold fewer distinct points than asked for
        if len(specs) >= 2 + n_random:
            break
        spec = decode({k: rng.choice(v) for k, v in choices.items()})
        specs.setdefault(spec_hash(spec), spec)
    return list(specs.values())
