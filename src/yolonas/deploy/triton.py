"""A Triton Inference Server model repository: the NMS-inside model and its `config.pbtxt`.

    <repository>/<name>/config.pbtxt      backend, max_batch_size, inputs, outputs, dynamic batching, class names
    <repository>/<name>/1/model.onnx      for Triton's onnxruntime backend
    <repository>/<name>/1/model.xml+.bin  or an OpenVINO IR, for its openvino backend

Triton's dynamic batcher joins requests into one batch, and the NMS thresholds of our graph hold for a whole batch;
Triton feeds a threshold input (an ONNX input with a default) only to models without batching. So the repository's
model has its thresholds fixed at export (`--conf`, `--iou`): its one input is `images`. The inputs and outputs in
the config are read from the exported graph itself, so the two cannot disagree. The class names, pre-processing
and NMS settings go in the config's `parameters` (JSON strings) and in the model file's metadata, where
`open_predictor` reads them: the repository's model file runs through our Predictor like any export.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from yolonas.arch.model import YoloNAS
from yolonas.deploy.export import THRESHOLD_INPUTS, export_onnx, export_openvino
from yolonas.errors import InputError
from yolonas.infer.postprocess import PREDICT_NMS, NMSConfig

log = logging.getLogger(__name__)

MODEL_FILES = {"onnxruntime": "model.onnx", "openvino": "model.xml"}  # Triton's default file name per backend
# ONNX element types -> Triton data types (onnx.TensorProto's numbering).
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL",
                10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


def export_triton(model: YoloNAS, repository: str | Path, *, backend: str = "onnxruntime", name: str = "yolonas",
                  nms: NMSConfig = PREDICT_NMS, max_batch: int = 8, max_queue_delay_us: int = 2000,
                  uint8_input: bool = False, opset: int = 17) -> Path:
    """Write `model` as the Triton model `name` in `repository` (see the module doc); returns the model's folder.

    `backend`: onnxruntime (the .onnx) or openvino (an IR); `max_batch` is Triton's max_batch_size, and requests
    wait up to `max_queue_delay_us` to be batched. An existing folder of that name is replaced."""
    import onnx  # noqa: PLC0415 - the onnx extra

    if backend not in MODEL_FILES:
        raise InputError(f"Triton backend {backend!r}: use {' or '.join(MODEL_FILES)}")
    if not 1 <= max_batch <= 1024:
        raise InputError(f"Triton max_batch_size {max_batch}: give 1 to 1024")
    folder = Path(repository) / name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "1").mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="yolonas-triton-") as tmp:
        exported = export_onnx(model, Path(tmp) / "model.onnx", batch=None, nms=nms, uint8_input=uint8_input,
                               opset=opset)
        graph = onnx.load(str(exported))
        _fix_thresholds(graph)
        model_file = folder / "1" / MODEL_FILES[backend]
        if backend == "onnxruntime":
            onnx.save(graph, str(model_file))
        else:
            fixed = Path(tmp) / "fixed.onnx"
            onnx.save(graph, str(fixed))
            export_openvino(fixed, model_file, precision="f32")
    meta = {p.key: p.value for p in graph.metadata_props}
    text = config_pbtxt(name, backend, _tensors(graph.graph.input), _tensors(graph.graph.output), max_batch,
                        max_queue_delay_us, {k: v for k, v in meta.items() if k.startswith("yolonas_")
                                             and k != "yolonas_spec"})
    (folder / "config.pbtxt").write_text(text, encoding="utf-8")
    log.info("export: Triton model %s (%s backend, max batch %d, %s)", folder, backend, max_batch, nms.describe())
    return folder


def _fix_thresholds(graph) -> None:
    """Make the graph's threshold inputs constants: their defaults (initializers) stay, the inputs go."""
    kept = [v for v in graph.graph.input if v.name not in THRESHOLD_INPUTS]
    del graph.graph.input[:]
    graph.graph.input.extend(kept)


def _tensors(values) -> list[tuple[str, str, list[int]]]:
    """(name, Triton data type, dims without the batch dimension) of ONNX graph inputs or outputs."""
    out = []
    for value in values:
        tensor = value.type.tensor_type
        if tensor.elem_type not in TRITON_TYPES:
            raise InputError(f"{value.name}: ONNX element type {tensor.elem_type} has no Triton data type here")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        out.append((value.name, TRITON_TYPES[tensor.elem_type], dims[1:]))  # the first is Triton's batch
    return out


def config_pbtxt(name: str, backend: str, inputs: list[tuple[str, str, list[int]]],
                 outputs: list[tuple[str, str, list[int]]], max_batch: int, max_queue_delay_us: int,
                 parameters: dict[str, str]) -> str:
    """Triton's model configuration in protobuf text format."""
    lines = [f"name: {_quoted(name)}", f"backend: {_quoted(backend)}", f"max_batch_size: {max_batch}"]
    for kind, tensors in (("input", inputs), ("output", outputs)):
        entries = [f"  {{ name: {_quoted(n)} data_type: {t} dims: [ {', '.join(map(str, d))} ] }}"
                   for n, t, d in tensors]
        lines += [f"{kind} [", ",\n".join(entries), "]"]
    lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    if backend == "openvino":  # OpenVINO's Triton backend runs on the CPU only
        lines += ["instance_group [ { count: 1 kind: KIND_CPU } ]"]
    for key, value in parameters.items():
        lines += [f"parameters {{ key: {_quoted(key)} value: {{ string_value: {_quoted(value)} }} }}"]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    """A protobuf text-format string: JSON's escapes for quotes, backslashes and control characters agree."""
    return json.dumps(text, ensure_ascii=False)
