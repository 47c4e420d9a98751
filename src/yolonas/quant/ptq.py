"""Post-training quantization: a float yolonas .onnx plus calibrated ranges in, a QDQ INT8 .onnx out."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from yolonas.deploy.export import META_QUANTIZATION
from yolonas.errors import InputError
from yolonas.quant.calibration import (
    CONV_OP_TYPES,
    NETWORK_PREFIXES,
    QUANT_OP_TYPES,
    Calibration,
    read_model_info,
)

log = logging.getLogger(__name__)

ACTIVATIONS = ("uint8", "int8")
# uint8 asymmetric activations (ORT's U8S8 kernels) measured fastest on this project's x86 CPU
# (benchmarks/results/quant_speed_cpu.md); int8 symmetric (zero point 0) is what TensorRT requires.
DEFAULT_ACTIVATIONS = "uint8"


@dataclass(frozen=True)
class Layer:
    """One convolution of the network: its ONNX node, the module it came from, and its size."""

    node: str  # e.g. /model/backbone/stem/conv/rbr_reparam/Conv
    module: str  # e.g. backbone.stem.conv.rbr_reparam
    op_type: str
    macs: int  # multiply-accumulates per image at the exported size


def module_name(node: str) -> str:
    """The PyTorch module path of an ONNX node named by the legacy exporter (`/model/a/b/Conv` -> `a.b`)."""
    parts = [p for p in node.split("/") if p]
    if parts and parts[0] == "model":  # ExportWrapper's attribute holding the YoloNAS
        parts = parts[1:]
    return ".".join(parts[:-1]) if len(parts) > 1 else node


def in_network(node) -> bool:
    """True for nodes of the backbone, neck and per-level head convs (not the head's glue or the decode)."""
    return node.name.startswith(NETWORK_PREFIXES) and not re.match(r"/model/heads/[A-Z]", node.name)


def conv_layers(model: str | Path) -> list[Layer]:
    """Every convolution of the network in graph order, with its MACs from the inferred shapes."""
    import onnx  # noqa: PLC0415
    from onnx import numpy_helper, shape_inference  # noqa: PLC0415

    graph = shape_inference.infer_shapes(onnx.load(str(model))).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in
              (*graph.value_info, *graph.output, *graph.input)}
    weights = {t.name: t.dims for t in graph.initializer}
    layers = []
    for node in graph.node:
        if node.op_type not in CONV_OP_TYPES or not in_network(node):
            continue
        w = weights.get(node.input[1])
        if w is None:  # a weight computed in the graph is not something we export
            w = numpy_helper.to_array(next(t for t in graph.initializer if t.name == node.input[1])).shape
        out = shapes.get(node.output[0], [])
        spatial = 1
        for d in out[2:]:
            spatial *= max(d, 1)
        macs = spatial * int(w[0]) * int(w[1]) * int(_prod(w[2:])) if node.op_type == "Conv" else \
            _prod(shapes.get(node.input[0], [1])[2:]) * int(_prod(w))
        layers.append(Layer(node.name, module_name(node.name), node.op_type, int(macs)))
    return layers


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= max(int(x), 1)
    return p


def network_nodes(model: str | Path) -> list[str]:
    """Names of the nodes that full INT8 quantizes: convs and the adds/concats/pools/relus between them."""
    import onnx  # noqa: PLC0415

    graph = onnx.load(str(model), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in QUANT_OP_TYPES and in_network(n)]


def resolve_layers(names, model: str | Path) -> list[str]:
    """ONNX node names for `names`, each a conv node name or its module name; InputError for unknown ones."""
    layers = conv_layers(model)
    by_module = {lay.module: lay.node for lay in layers}
    nodes = {lay.node for lay in layers}
    out = []
    for name in names:
        if name in nodes:
            out.append(name)
        elif name in by_module:
            out.append(by_module[name])
        else:
            raise InputError(f"{name!r} is not a convolution of {model} (give a module name such as "
                             f"{layers[0].module!r} or a node name such as {layers[0].node!r})")
    return out


def prepare(float_model: str | Path, output: str | Path) -> Path:
    """onnxruntime's quant_pre_process (shape inference and graph optimisation), keeping our metadata."""
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import quant_pre_process  # noqa: PLC0415

    info = read_model_info(float_model)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    quant_pre_process(str(info.path), str(output))
    model = onnx.load(str(output))
    del model.metadata_props[:]
    for key, value in info.metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(output))
    return output


def load_for_quantization(model: str | Path):
    """The float model with inferred shapes, as onnxruntime's quantizer needs it; copy it per variant."""
    import onnx  # noqa: PLC0415
    from onnx import shape_inference  # noqa: PLC0415

    return shape_inference.infer_shapes(onnx.load(str(model)))


def qdq_proto(base, tensors_range, selected: set[str], activations: str = DEFAULT_ACTIVATIONS):
    """A QDQ ModelProto of `base` (from load_for_quantization, left untouched) with exactly the `selected` nodes
    INT8, from already computed ranges: the calibrate-once, quantize-many path (what quantize_static does after
    calibrating, or with calibration_cache_path)."""
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import QDQQuantizer, QuantType  # noqa: PLC0415

    if activations not in ACTIVATIONS:
        raise InputError(f"activations {activations!r}: use uint8 (fastest on x86 CPUs) or int8 (TensorRT)")
    symmetric = activations == "int8"
    model = onnx.ModelProto()
    model.CopyFrom(base)  # the quantizer edits its model in place
    # An explicit exclusion list of every other node: an empty nodes_to_quantize would mean "all" to ORT.
    exclude = [n.name for n in model.graph.node if n.name not in selected]
    quantizer = QDQQuantizer(model, True, False, QuantType.QInt8,
                             QuantType.QInt8 if symmetric else QuantType.QUInt8, tensors_range, [], exclude,
                             list(QUANT_OP_TYPES), {"ActivationSymmetric": symmetric, "WeightSymmetric": True})
    with contextlib.redirect_stdout(io.StringIO()), quiet_ort_logging():
        quantizer.quantize_model()
    quantizer.model.topological_sort()  # as quantize_static does when it saves
    for init in quantizer.model.model.graph.initializer:  # and its check of every initializer at the end
        quantizer.model._check_init(init, "end")
    return quantizer.model.model


def selected_nodes(model: str | Path, float_layers=(), nodes: list[str] | None = None) -> tuple[set[str], list[str]]:
    """(nodes to quantize, conv nodes kept float): every network node but `float_layers`, or exactly `nodes`."""
    kept_float = resolve_layers(float_layers, model)
    return set(network_nodes(model) if nodes is None else nodes) - set(kept_float), kept_float


def write_qdq(calib: Calibration, output: str | Path, *, activations: str = DEFAULT_ACTIVATIONS,
              float_layers=(), nodes: list[str] | None = None, mode: str = "ptq", base=None) -> Path:
    """Quantize `calib.model` with its saved ranges (no new calibration) into a QDQ .onnx at `output`.

    Weights: int8, per output channel, symmetric. Activations: `uint8` (asymmetric, per tensor) or `int8`
    (symmetric, zero point 0, as TensorRT requires). Every network node is INT8 except the convs named in
    `float_layers` (node or module names); `nodes` instead names exactly the nodes to quantize. `base` is
    load_for_quantization(calib.model), when the caller already has it.
    """
    import onnx  # noqa: PLC0415
    import onnxruntime  # noqa: PLC0415
    from onnxruntime.quantization import load_tensors_data  # noqa: PLC0415

    info = read_model_info(calib.model)
    selected, kept_float = selected_nodes(calib.model, float_layers, nodes)
    model = qdq_proto(base if base is not None else load_for_quantization(calib.model),
                      load_tensors_data(calib.ranges), selected, activations)
    del model.metadata_props[:]
    meta = dict(info.metadata)
    meta[META_QUANTIZATION] = json.dumps({
        "mode": mode, "format": "QDQ", "weights": "int8 per-channel symmetric",
        "activations": "int8 symmetric per-tensor" if activations == "int8" else "uint8 asymmetric per-tensor",
        "method": calib.method, "percentile": calib.percentile, "calibration_images": len(calib.images),
        "seed": calib.seed, "quantized_nodes": len(selected),
        "float_layers": [module_name(n) for n in kept_float], "onnxruntime": onnxruntime.__version__})
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(output))
    return output


@contextlib.contextmanager
def quiet_ort_logging():
    """onnxruntime.quantization's info logging off for the duration."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization logs through the root logger
    try:
        yield
    finally:
        root.setLevel(level)


def int8_for_latency(float_model: str | Path, output: str | Path, feeds: list, *,
                     prefixes: tuple[str, ...] | None = None) -> Path:
    """Any float .onnx as QDQ INT8 the way `write_qdq` quantizes (the same `qdq_proto`), with min-max ranges from
    one call on the arrays `feeds`: for timing only, since INT8 latency does not depend on the ranges.
    `prefixes` limits it to the nodes whose names start so (default: every node)."""
    import onnx  # noqa: PLC0415
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, quant_pre_process  # noqa: PLC0415

    class _Once:  # a CalibrationDataReader: one call's inputs, then the end
        def __init__(self, names: list[str]):
            self.items = [dict(zip(names, feeds))]

        def get_next(self) -> dict | None:
            return self.items.pop() if self.items else None

    with tempfile.TemporaryDirectory(prefix="yolonas-int8-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()), quiet_ort_logging():
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(float_model), str(prepared))
        base = load_for_quantization(prepared)
        calibrator = create_calibrator(prepared, list(QUANT_OP_TYPES), augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(_Once([i.name for i in base.graph.input]))
        ranges = calibrator.compute_data()
    selected = {n.name for n in base.graph.node if not prefixes or n.name.startswith(prefixes)}
    output = Path(output)
    onnx.save(qdq_proto(base, ranges, selected), str(output))
    return output
