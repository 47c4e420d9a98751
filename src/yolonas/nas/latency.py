"""Latency model: every part of a candidate (stem, 4 stages, SPP, 4 neck stages, heads) measured on the target
backend as its own small fused model, cached on disk, and summed into a prediction of the whole network.

The cache key is (part config, input shapes, backend, precision, threads, machine), so a table can be shared by
every search on a machine. Parts are timed the one way (deploy.timing: turns by blocks, medians of block
medians); a table timed another way (an older TIMING_VERSION) is refused, not mixed.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolonas.arch.backbone import Stage, Stem
from yolonas.arch.blocks import SPP
from yolonas.arch.head import DFLHeads, decode_boxes
from yolonas.arch.model import YoloNAS, build
from yolonas.arch.neck import DownStage, UpStage
from yolonas.arch.spec import ArchSpec, HeadSpec, NeckStageSpec, StageSpec
from yolonas.deploy.timing import TIMING_VERSION, cpu_name, openvino_compiled, ort_runner, ort_session, time_blocks
from yolonas.errors import InputError
from yolonas.preprocess import Preprocessing

BACKENDS = ("onnxruntime", "openvino", "torch")
# int8: the QDQ model `yolonas quantize` writes (ONNX backends); fp16: PyTorch on CUDA, as TorchBackend(half=True)
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Part:
    """One separately measured piece of a network: its kind, its constructor arguments and its input shapes."""

    name: str  # where it sits: stem, stage1..4, spp, neck1..4, heads (not part of the cache key)
    kind: str  # stem, stage, spp, up, down, heads
    config: str  # JSON of the constructor arguments
    shapes: tuple[tuple[int, ...], ...]

    def build(self) -> nn.Module:
        """The part as a fused, eval-mode module with random weights (latency does not depend on the values)."""
        c = json.loads(self.config)
        if self.kind == "stem":
            m = Stem(c["in"], c["out"], c["block"])
        elif self.kind == "stage":
            m = Stage(c["in"], StageSpec(**c["spec"]))
        elif self.kind == "spp":
            m = SPP(c["in"], c["out"], tuple(c["kernels"]))
        elif self.kind == "up":
            m = UpStage(c["x"], c["skip1"], c["skip2"], NeckStageSpec(**c["spec"]))
        elif self.kind == "down":
            m = DownStage(c["x"], c["skip"], NeckStageSpec(**c["spec"]))
        elif self.kind == "heads":
            m = _Heads(c["in"], HeadSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in c["spec"].items()}),
                       c["classes"])
        else:
            raise InputError(f"unknown latency part kind {self.kind!r}")
        return YoloNAS.fuse_blocks(m.eval())  # the model's own fusion step, on a part

    def key(self, target: str) -> str:
        return json.dumps({"kind": self.kind, "config": json.loads(self.config), "shapes": self.shapes,
                           "target": target}, sort_keys=True)


class _Heads(nn.Module):
    """The three heads plus the box decode: the tail of the exported graph."""

    def __init__(self, in_channels: list[int], spec: HeadSpec, num_classes: int):
        super().__init__()
        self.heads = DFLHeads(in_channels, spec, num_classes)
        self.reg_max = spec.reg_max

    def forward(self, p3: torch.Tensor, p4: torch.Tensor, p5: torch.Tensor):
        return decode_boxes(self.heads([p3, p4, p5]), self.reg_max)


def _j(**kw) -> str:
    return json.dumps(kw, sort_keys=True)


def spec_parts(spec: ArchSpec, imgsz: int, num_classes: int) -> list[Part]:
    """The parts of `spec` at a square input `imgsz`, with the shapes each one sees inside the whole network."""
    if imgsz % 32 or imgsz < 32:
        raise InputError(f"input size {imgsz} must be a positive multiple of 32")
    bb, neck = spec.backbone, spec.neck

    def shape(ch: int, stride: int) -> tuple[int, ...]:
        return (1, ch, imgsz // stride, imgsz // stride)

    parts = [Part("stem", "stem", _j(**{"in": spec.in_channels, "out": bb.stem_channels, "block": bb.stem_block}),
                  (shape(spec.in_channels, 1),))]
    ch = bb.stem_channels
    for i, st in enumerate(bb.stages, start=1):
        parts.append(Part(f"stage{i}", "stage", _j(**{"in": ch, "spec": _plain(st)}), (shape(ch, 2 ** i),)))
        ch = st.out_channels
    parts.append(Part("spp", "spp", _j(**{"in": ch, "out": bb.spp_channels, "kernels": list(bb.spp_kernels)}),
                      (shape(ch, 32),)))
    c2, c3, c4, c5 = [s.out_channels for s in bb.stages[:3]] + [bb.spp_channels]
    parts += [
        Part("neck1", "up", _j(x=c5, skip1=c4, skip2=c3, spec=_plain(neck.up1)),
             (shape(c5, 32), shape(c4, 16), shape(c3, 8))),
        Part("neck2", "up", _j(x=neck.up1.out_channels, skip1=c3, skip2=c2, spec=_plain(neck.up2)),
             (shape(neck.up1.out_channels, 16), shape(c3, 8), shape(c2, 4))),
        Part("neck3", "down", _j(x=neck.up2.out_channels, skip=neck.up2.out_channels, spec=_plain(neck.down1)),
             (shape(neck.up2.out_channels, 8), shape(neck.up2.out_channels, 16))),
        Part("neck4", "down", _j(x=neck.down1.out_channels, skip=neck.up1.out_channels, spec=_plain(neck.down2)),
             (shape(neck.down1.out_channels, 16), shape(neck.up1.out_channels, 32))),
    ]
    p = [neck.up2.out_channels, neck.down1.out_channels, neck.down2.out_channels]
    parts.append(Part("heads", "heads", _j(**{"in": p, "spec": _plain(spec.head), "classes": num_classes}),
                      (shape(p[0], 8), shape(p[1], 16), shape(p[2], 32))))
    return parts


def _plain(obj) -> dict:
    from dataclasses import asdict  # noqa: PLC0415

    return json.loads(json.dumps(asdict(obj)))


def machine_id() -> str:
    """The CPU model and core count: part of every cache key, so a table copied to another machine misses."""
    return f"{cpu_name()} x{os.cpu_count()}"


class LatencyTable:
    """Measured part latencies (ms) in a JSON file, keyed by part and target, and the calibrations of their sum
    against whole networks, keyed by target and input size; written after every new entry."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, dict] = {}
        self.calibrations: dict[str, dict] = {}
        self.hits = self.misses = 0
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                version = data.get("version")
                self.entries = data["entries"]
                self.calibrations = data.get("calibrations", {})
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise InputError(f"{self.path}: not a latency table ({e}); delete it to start a new one") from None
            if version != TIMING_VERSION:
                raise InputError(f"{self.path}: a latency table timed the old way (version {version}, now "
                                 f"{TIMING_VERSION}); its numbers do not mix with new ones: delete it, or pass "
                                 "--latency-table with a new file")

    def get(self, key: str) -> float | None:
        """The cached latency for `key`, counting the hit or miss."""
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        return float(entry["ms"])

    def put(self, key: str, ms: float, runs: int) -> None:
        self.entries[key] = {"ms": ms, "runs": runs, "load": os.getloadavg()[0], "time": time.time()}

    def save(self) -> None:
        """Write atomically, so an interrupted search leaves a readable table."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = {"version": TIMING_VERSION, "entries": self.entries, "calibrations": self.calibrations}
        tmp.write_text(json.dumps(data, indent=0))
        tmp.replace(self.path)


def _backend_version(backend: str) -> str:
    try:
        if backend == "onnxruntime":
            import onnxruntime  # noqa: PLC0415

            return onnxruntime.__version__
        if backend == "openvino":
            import openvino  # noqa: PLC0415

            return openvino.__version__
    except ImportError as e:
        extra = "onnx" if backend == "onnxruntime" else backend
        raise InputError(f"the {backend} latency backend needs {e.name}: pip install 'yolonas[{extra}]'") from None
    return torch.__version__


def _export(module: nn.Module, inputs: list[torch.Tensor], path: Path) -> Path:
    """The part as ONNX the way `export_onnx` writes the whole model: TorchScript exporter, opset 17, folded."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(inputs), str(path), input_names=[f"x{i}" for i in range(len(inputs))],
                          opset_version=17, dynamo=False, do_constant_folding=True)
    return path


@dataclass
class LatencyModel:
    """Predicts (sum of cached part latencies) and measures (whole exported model) on one target."""

    table: LatencyTable
    backend: str = "onnxruntime"
    threads: int = 2
    precision: str = "fp32"
    device: str = "cpu"
    warmup: int = 3
    runs: int = 15
    measured: int = field(default=0, init=False)  # parts measured (cache misses) by this model

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise InputError(f"unknown latency backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.precision == "int8" and self.backend == "torch":
            raise InputError("int8 latency runs the QDQ ONNX that `yolonas quantize` writes: use --backend "
                             "onnxruntime or openvino")
        if self.precision == "fp16" and not (self.backend == "torch" and self.device.startswith("cuda")):
            raise InputError("fp16 latency is PyTorch on a GPU: use --backend torch --device cuda")
        if self.threads < 1:
            raise InputError(f"--threads must be at least 1, got {self.threads}")
        if self.backend != "torch" and self.device != "cpu":
            raise InputError(f"the {self.backend} latency backend runs on the CPU here; use --backend torch for "
                             f"{self.device}")
        _backend_version(self.backend)  # fails early when the backend's package is missing

    @property
    def target(self) -> str:
        """Everything about where parts run: the non-part half of each cache key."""
        return (f"{self.backend} {_backend_version(self.backend)} {self.device} {self.precision} "
                f"threads={self.threads} on {machine_id()}")

    def predict(self, spec: ArchSpec, imgsz: int, num_classes: int) -> dict[str, float]:
        """Part name -> ms, plus "total": cached parts are looked up, missing ones measured (together) and cached."""
        parts = spec_parts(spec, imgsz, num_classes)
        target = self.target
        out: dict[str, float] = {}
        missing: dict[str, Part] = {}
        for p in parts:
            ms = self.table.get(p.key(target))
            if ms is None:
                missing.setdefault(p.key(target), p)
            else:
                out[p.name] = ms
        if missing:
            times = self._time({k: (p.build(), [torch.randn(s) for s in p.shapes], False) for k, p in missing.items()})
            for key, ms in times.items():
                self.table.put(key, ms, self.runs)
            self.table.save()
            self.measured += len(missing)
            for p in parts:
                out.setdefault(p.name, times.get(p.key(target), 0.0))
        out["total"] = sum(out[p.name] for p in parts)
        return out

    def calibration(self, specs: list[ArchSpec], imgsz: int, num_classes: int) -> dict:
        """measured whole ≈ a * (sum of parts) + b, fitted on `specs` measured end to end, cached in the table.

        Each part runs as its own session with its own inputs, outputs and call overhead, which the whole network
        pays once: the raw sum over-predicts, by about 3% at 640 px and 15% at 320 px on 2-core CPUs here."""
        key = f"{self.target} imgsz={imgsz}"
        if key in self.table.calibrations:
            return self.table.calibrations[key]
        if len(specs) < 3:
            raise InputError(f"a latency calibration needs at least 3 networks, got {len(specs)}")
        sums = [self.predict(s, imgsz, num_classes)["total"] for s in specs]
        whole = self.measure(specs, imgsz, num_classes)["whole"]
        a, b = fit_correction(sums, whole)
        if a <= 0:  # networks too alike in latency to fit a slope: a ratio only
            a, b = statistics.median(m / x for x, m in zip(sums, whole)), 0.0
        cal = {"a": a, "b": b, "n": len(specs), "parts_sum": sums, "whole": whole,
               "fit_errors": [abs(a * x + b - m) / m for x, m in zip(sums, whole)], "load": os.getloadavg()[0]}
        self.table.calibrations[key] = cal
        self.table.save()
        return cal

    def measure(self, specs: list[ArchSpec], imgsz: int, num_classes: int, with_parts: bool = False) -> dict:
        """End-to-end ms of each whole model (exported by `export_onnx`, decode included), the models taking turns.

        With `with_parts`, every part of every model is measured afresh in the same turns (not from the table),
        so that the sum of parts and the whole are compared under the same machine load.
        Returns {"whole": [ms per spec], "parts_sum": [ms per spec] (with_parts only)}.
        """
        from yolonas.deploy.export import ExportWrapper  # noqa: PLC0415

        jobs: dict[str, tuple[nn.Module, list[torch.Tensor], bool]] = {}
        for i, spec in enumerate(specs):
            model = build(spec, num_classes, preprocessing=Preprocessing((imgsz, imgsz))).eval()
            x = [torch.rand(1, 3, imgsz, imgsz)]
            jobs[f"whole{i}"] = (ExportWrapper(model.fuse()).eval(), x, False) if self.backend == "torch" else (
                model, x, True)
            if with_parts:
                for p in spec_parts(spec, imgsz, num_classes):
                    jobs.setdefault(p.key(self.target), (p.build(), [torch.randn(s) for s in p.shapes], False))
        times = self._time(jobs)
        out = {"whole": [times[f"whole{i}"] for i in range(len(specs))]}
        if with_parts:
            out["parts_sum"] = [sum(times[p.key(self.target)] for p in spec_parts(s, imgsz, num_classes))
                                for s in specs]
        return out

    def _runner(self, module: nn.Module, inputs: list[torch.Tensor], folder: Path, name: str,
                whole: bool) -> Callable[[], object]:
        if self.backend == "torch":
            device = torch.device(self.device)
            dtype = torch.float16 if self.precision == "fp16" else torch.float32
            module = module.to(device, dtype)
            xs = [x.to(device, dtype) for x in inputs]

            def run():
                with torch.inference_mode():
                    out = module(*xs)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return out

            return run
        path = folder / f"{name}.onnx"
        if whole:
            from yolonas.deploy.export import export_onnx  # noqa: PLC0415 - the fused full-model export

            export_onnx(module, path, image_size=tuple(inputs[0].shape[2:]))
        else:
            _export(module, inputs, path)
        feeds = [x.numpy() for x in inputs]
        if self.precision == "int8":
            from yolonas.quant.calibration import NETWORK_PREFIXES  # noqa: PLC0415
            from yolonas.quant.ptq import int8_for_latency  # noqa: PLC0415

            # As in the whole model, the head convs are INT8 and the box decode after them stays float.
            prefixes = NETWORK_PREFIXES if whole else ("/heads/head",) if isinstance(module, _Heads) else None
            path = int8_for_latency(path, path.with_name(f"{name}_int8.onnx"), feeds, prefixes=prefixes)
        if self.backend == "onnxruntime":
            return ort_runner(ort_session(path, self.threads), *feeds)
        request = openvino_compiled(path, self.threads, precision="f32").create_infer_request()
        return lambda: request.infer(dict(enumerate(feeds)))

    def _time(self, jobs: dict[str, tuple[nn.Module, list[torch.Tensor], bool]]) -> dict[str, float]:
        """Median ms per job, timed the one way (deploy.timing: the jobs take turns by blocks)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        blocks = min(3, self.runs)
        try:
            with tempfile.TemporaryDirectory(prefix="yolonas_lat_") as tmp:
                runners = {k: self._runner(m, x, Path(tmp), f"p{i}", whole)
                           for i, (k, (m, x, whole)) in enumerate(jobs.items())}
                timings = time_blocks(runners, blocks=blocks, runs=-(-self.runs // blocks), warmup=self.warmup)
        finally:
            torch.set_num_threads(threads)
        return timings.medians()


def fit_correction(predicted: list[float], measured: list[float]) -> tuple[float, float]:
    """(a, b) of measured ≈ a * predicted + b by least squares; (1, 0) with fewer than 3 points."""
    if len(predicted) < 3:
        return 1.0, 0.0
    a, b = np.polyfit(np.asarray(predicted), np.asarray(measured), 1)
    return float(a), float(b)


def prediction_errors(predicted: list[float], measured: list[float]) -> dict:
    """Relative errors of the raw sum and of the linear correction, the latter leave-one-out (honest)."""
    raw = [abs(p - m) / m for p, m in zip(predicted, measured)]
    loo = []
    if len(predicted) >= 4:  # 3 points left to fit each held-out one
        for i in range(len(predicted)):
            a, b = fit_correction(predicted[:i] + predicted[i + 1:], measured[:i] + measured[i + 1:])
            loo.append(abs(a * predicted[i] + b - measured[i]) / measured[i])
    a, b = fit_correction(predicted, measured)
    return {"n": len(predicted), "raw_median": statistics.median(raw) if raw else None,
            "raw_max": max(raw) if raw else None, "raw": raw,
            "corrected_loo_median": statistics.median(loo) if loo else None, "corrected_loo": loo,
            "correction": {"a": a, "b": b}}
