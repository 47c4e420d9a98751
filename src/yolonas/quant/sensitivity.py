"""Per-layer sensitivity: each conv's effect on the head outputs when quantized, and its share of the latency."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from yolonas.deploy.timing import ort_session
from yolonas.errors import InputError
from yolonas.quant.calibration import Calibration, load_batch, read_model_info
from yolonas.quant.ptq import (
    DEFAULT_ACTIVATIONS,
    Layer,
    conv_layers,
    load_for_quantization,
    network_nodes,
    qdq_proto,
    selected_nodes,
)

MODES = ("leave_one_out", "one_at_a_time")
TOP_K = 100  # anchors per image compared: the fp32 model's best, i.e. those that could become detections

METRIC = (f"output error on the {TOP_K} anchors with the highest fp32 class score per image: mean |score difference| "
          "of the fp32 best class + mean (1 - IoU) between the fp32 and quantized boxes, averaged over images")


@dataclass(frozen=True)
class OutputError:
    """How far quantized head outputs are from fp32 on the anchors that matter."""

    score: float  # mean |s_q - s_fp32| of the fp32 best class over the top anchors
    box: float  # mean (1 - IoU(b_q, b_fp32)) over the same anchors

    @property
    def total(self) -> float:
        return self.score + self.box


def output_error(ref: tuple[np.ndarray, np.ndarray], out: tuple[np.ndarray, np.ndarray],
                 top_k: int = TOP_K) -> OutputError:
    """Compare (boxes [B, N, 4], scores [B, N, C]) with the fp32 reference on its `top_k` best anchors per image."""
    ref_boxes, ref_scores = ref
    boxes, scores = out
    k = min(top_k, ref_scores.shape[1])
    best = ref_scores.max(axis=2)  # [B, N]
    cls = ref_scores.argmax(axis=2)
    idx = np.argpartition(-best, k - 1, axis=1)[:, :k]  # [B, k]
    ref_s = np.take_along_axis(best, idx, axis=1)
    q_s = np.take_along_axis(np.take_along_axis(scores, cls[..., None], axis=2)[..., 0], idx, axis=1)
    rb = np.take_along_axis(ref_boxes, idx[..., None], axis=1)
    qb = np.take_along_axis(boxes, idx[..., None], axis=1)
    lt, rb_ = np.maximum(rb[..., :2], qb[..., :2]), np.minimum(rb[..., 2:], qb[..., 2:])
    inter = np.clip(rb_ - lt, 0, None).prod(axis=-1)
    area = lambda b: np.clip(b[..., 2:] - b[..., :2], 0, None).prod(axis=-1)
    iou = inter / np.maximum(area(rb) + area(qb) - inter, 1e-9)
    return OutputError(float(np.abs(q_s - ref_s).mean()), float((1 - iou).mean()))


def _run(session, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: batch[i:i + 1]}) for i in range(len(batch))]  # static batch-1 exports
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


class Evaluator:
    """Quantized variants of one calibrated model, scored against fp32 on fixed validation images.

    The ranges are read once (no re-calibration per variant) and every variant is built in memory.
    """

    def __init__(self, calib: Calibration, val_files: list[Path], activations: str = DEFAULT_ACTIVATIONS,
                 threads: int = 2):
        from onnxruntime.quantization import load_tensors_data  # noqa: PLC0415

        if not val_files:
            raise InputError("sensitivity analysis needs at least one validation image")
        overlap = {str(f) for f in val_files} & set(calib.images)
        if overlap:
            raise InputError(f"validation images must not be calibration images ({len(overlap)} shared)")
        self.calib = calib
        self.activations = activations
        self.threads = threads
        self.val_files = [Path(f) for f in val_files]
        info = read_model_info(calib.model)
        self.batch = load_batch(self.val_files, info.preprocessing, info.uint8_input)
        self.base = load_for_quantization(calib.model)
        self.ranges = load_tensors_data(calib.ranges)
        self.layers: list[Layer] = conv_layers(calib.model)
        self.network = network_nodes(calib.model)
        self.reference = _run(ort_session(calib.model, threads), self.batch)

    def variant(self, float_layers=(), nodes: list[str] | None = None):
        """The QDQ ModelProto with every network node INT8 but `float_layers` (or exactly `nodes`)."""
        selected, _ = selected_nodes(self.calib.model, float_layers, nodes)
        return qdq_proto(self.base, self.ranges, selected, self.activations)

    def error(self, float_layers=(), nodes: list[str] | None = None) -> OutputError:
        """Output error of a variant on the validation images."""
        return output_error(self.reference, _run(ort_session(self.variant(float_layers, nodes), self.threads),
                                                 self.batch))


def _conv_keys(model: str | Path) -> dict[str, str]:
    """Names under which onnxruntime's profiler may report each conv -> the conv's node name.

    QDQ fusion keeps the conv's node name; the fp32 NCHWc transformer names a fused conv + relu after its output
    tensor (`<relu output>_nchwc`).
    """
    import onnx  # noqa: PLC0415

    graph = onnx.load(str(model), load_external_data=False).graph
    consumers: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    keys = {}
    for lay in conv_layers(model):
        node = next(n for n in graph.node if n.name == lay.node)
        keys[lay.node] = keys[node.output[0]] = lay.node
        after = consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Relu":
            keys[after[0].name] = keys[after[0].output[0]] = lay.node
    return keys


def _kernel_events(model, batch: np.ndarray, runs: int, threads: int) -> list[dict]:
    """onnxruntime's profiler events of each node's kernel over `runs` timed runs (after one warm-up run)."""
    with tempfile.TemporaryDirectory(prefix="yolonas-prof-") as tmp:
        session = ort_session(model, threads, profile_prefix=str(Path(tmp) / "prof"))
        x = batch[:1]
        name = session.get_inputs()[0].name
        session.run(None, {name: x})  # warm-up; its events are dropped below
        for _ in range(runs):
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_timed = runs_seen[1]["ts"] if len(runs_seen) > 1 else 0
    return [e for e in events
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed]


def profile_layers(model, batch: np.ndarray, runs: int = 5, threads: int = 2) -> tuple[dict[str, float], float]:
    """(ms per run of each node, total ms per run of all nodes) from onnxruntime's profiler, node names as the
    profiler reports them (see _conv_keys)."""
    per_node: dict[str, float] = {}
    for e in _kernel_events(model, batch, runs, threads):
        node = re.sub(r"(_token_\d+)?_kernel_time$", "", e["name"]).removesuffix("_nchwc")
        per_node[node] = per_node.get(node, 0.0) + e["dur"] / 1e3 / runs
    return per_node, sum(per_node.values())


def profile_ops(model, batch: np.ndarray, runs: int = 5, threads: int = 2) -> dict[str, float]:
    """ms per run spent in each op type (Conv, Concat, ...) after onnxruntime's graph optimisations, largest first."""
    per_op: dict[str, float] = {}
    for e in _kernel_events(model, batch, runs, threads):
        op = e["args"]["op_name"]
        per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3 / runs
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


@dataclass
class LayerSensitivity:
    """One conv's measured effect (output error) and latency."""

    node: str
    module: str
    op_type: str
    macs: int
    error_alone: float | None  # output error with only this conv INT8 (one at a time)
    error_without: float | None  # output error with every network node INT8 but this conv (leave one out)
    gain: float | None  # full-INT8 error minus error_without: what keeping this conv float buys
    fp32_ms: float  # profiled time of the conv (fused with its activation) in the fp32 model
    int8_ms: float  # the same in the full-INT8 model
    latency_share: float  # fp32_ms / fp32 total

    @property
    def saving_ms(self) -> float:
        """Time that quantizing this conv saves (profiled; the Q/DQ at a float island are extra)."""
        return self.fp32_ms - self.int8_ms

    @property
    def sensitivity(self) -> float:
        """The ranking key: the leave-one-out gain when measured, else the one-at-a-time error."""
        return self.gain if self.gain is not None else (self.error_alone or 0.0)


@dataclass
class SensitivityReport:
    """Every quantizable conv of a model, ranked by how much its quantization hurts the outputs."""

    model: str
    activations: str
    calibration: dict
    validation_images: list[str]
    modes: list[str]
    metric: str
    full_int8_error: dict
    fp32_ms: float  # profiled total per image
    int8_ms: float
    threads: int
    layers: list[LayerSensitivity] = field(default_factory=list)

    def ranked(self) -> list[LayerSensitivity]:
        """Layers, most sensitive first (ties in graph order)."""
        return sorted(self.layers, key=lambda lay: -lay.sensitivity)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [{**asdict(lay), "saving_ms": lay.saving_ms, "sensitivity": lay.sensitivity, "rank": i + 1}
                       for i, lay in enumerate(self.ranked())]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SensitivityReport:
        keys = {f for f in LayerSensitivity.__dataclass_fields__}
        layers = [LayerSensitivity(**{k: v for k, v in lay.items() if k in keys}) for lay in d["layers"]]
        return cls(**{**d, "layers": layers})

    @classmethod
    def load(cls, path: str | Path) -> SensitivityReport:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def markdown(self) -> str:
        """A ranked table of every layer."""
        full = self.full_int8_error
        lines = [f"# Sensitivity: {Path(self.model).name} ({self.activations} activations)", "",
                 f"Metric: {self.metric}.", "",
                 f"Full INT8 error {full['total']:.4f} (score {full['score']:.4f}, box {full['box']:.4f}) on "
                 f"{len(self.validation_images)} validation images; calibration: {self.calibration['method']} on "
                 f"{len(self.calibration['images'])} images, seed {self.calibration['seed']}. Profiled per image "
                 f"({self.threads} threads): fp32 {self.fp32_ms:.1f} ms, full INT8 {self.int8_ms:.1f} ms "
                 "(sum of node times).", "",
                 "| rank | layer | MMACs | error alone | error without | gain if float | fp32 ms | int8 ms | "
                 "latency share |", "|---|---|---|---|---|---|---|---|---|"]
        fmt = lambda v: "" if v is None else f"{v:.4f}"
        for i, lay in enumerate(self.ranked()):
            lines.append(f"| {i + 1} | {lay.module} | {lay.macs / 1e6:.1f} | {fmt(lay.error_alone)} | "
                         f"{fmt(lay.error_without)} | {fmt(lay.gain)} | {lay.fp32_ms:.2f} | {lay.int8_ms:.2f} | "
                         f"{100 * lay.latency_share:.1f}% |")
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Sensitivity and latency share of every layer, in graph order, as a PNG."""
        from matplotlib.figure import Figure  # noqa: PLC0415 - no pyplot: no global state, no display backend

        n = len(self.layers)
        fig = Figure(figsize=(12, max(4.0, 0.16 * n)))
        a, b = fig.subplots(1, 2, sharey=True)
        y = np.arange(n)
        a.barh(y, [lay.sensitivity for lay in self.layers], color="tab:red")
        a.set_xlabel("gain if kept float (leave one out)" if "leave_one_out" in self.modes
                     else "output error when quantized alone")
        a.set_yticks(y, [lay.module for lay in self.layers], fontsize=5)
        a.invert_yaxis()
        b.barh(y, [100 * lay.latency_share for lay in self.layers], color="tab:blue", label="fp32")
        b.barh(y, [100 * lay.int8_ms / max(self.fp32_ms, 1e-9) for lay in self.layers], color="tab:cyan",
               label="int8", height=0.5)
        b.set_xlabel("% of fp32 latency")
        b.legend(loc="lower right")
        fig.suptitle(f"{Path(self.model).name}: per-layer sensitivity and latency")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        return path

    def save(self, folder: str | Path, stem: str = "sensitivity") -> dict[str, Path]:
        """Write <stem>.json, <stem>.md and <stem>.png into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = {"json": folder / f"{stem}.json", "md": folder / f"{stem}.md", "png": folder / f"{stem}.png"}
        out["json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        out["md"].write_text(self.markdown())
        self.plot(out["png"])
        return out


def analyze(evaluator: Evaluator, *, modes=("leave_one_out",), layers: list[str] | None = None,
            profile_runs: int = 5, progress: Callable[[int, int, str], None] | None = None) -> SensitivityReport:
    """Measure every conv (or the `layers` named, node or module names) in each of `modes` and profile latency."""
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InputError(f"sensitivity modes {bad or modes}: use {' and/or '.join(MODES)}")
    ev = evaluator
    chosen = ev.layers
    if layers is not None:
        names = set(layers)
        chosen = [lay for lay in ev.layers if lay.node in names or lay.module in names]
        if len(chosen) != len(names):
            raise InputError(f"unknown layers among {sorted(names)}")
    full = ev.error()
    keys = _conv_keys(ev.calib.model)
    per_layer = []
    totals = []
    for model in (ev.calib.model, ev.variant()):
        nodes, total = profile_layers(model, ev.batch, profile_runs, ev.threads)
        times: dict[str, float] = {}
        for name, ms in nodes.items():
            if name in keys:
                times[keys[name]] = times.get(keys[name], 0.0) + ms
        per_layer.append(times)
        totals.append(total)
    (fp32_nodes, int8_nodes), (fp32_total, int8_total) = per_layer, totals
    results = []
    for i, lay in enumerate(chosen):
        if progress is not None:
            progress(i, len(chosen), lay.module)
        alone = ev.error(nodes=[lay.node]).total if "one_at_a_time" in modes else None
        without = ev.error(float_layers=[lay.node]).total if "leave_one_out" in modes else None
        fp32_ms = fp32_nodes.get(lay.node, 0.0)
        results.append(LayerSensitivity(
            lay.node, lay.module, lay.op_type, lay.macs, alone, without,
            None if without is None else full.total - without, fp32_ms, int8_nodes.get(lay.node, 0.0),
            fp32_ms / max(fp32_total, 1e-9)))
    return SensitivityReport(str(ev.calib.model), ev.activations, ev.calib.describe(),
                             [str(f) for f in ev.val_files], list(modes), METRIC,
                             {"score": full.score, "box": full.box, "total": full.total}, fp32_total, int8_total,
                             ev.threads, results)
