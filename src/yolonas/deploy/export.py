"""ONNX export: a fused copy of the model, raw (boxes, scores) or with NMS in the graph, described by metadata."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from yolonas.arch.model import YoloNAS
from yolonas.deploy.timing import openvino_precision
from yolonas.errors import InputError
from yolonas.infer.postprocess import NMSConfig
from yolonas.preprocess import Preprocessing

log = logging.getLogger(__name__)

# Keys of the ONNX metadata_props that make an exported file self-describing (read back by deploy.backends).
META_CLASS_NAMES = "yolonas_class_names"
META_PREPROCESSING = "yolonas_preprocessing"
META_SPEC = "yolonas_spec"
META_OUTPUTS = "yolonas_outputs"
META_INPUT = "yolonas_input"
META_NMS = "yolonas_nms"
META_QUANTIZATION = "yolonas_quantization"  # how an INT8 file was quantized (JSON), written by yolonas.quant
META_PRECISION = "yolonas_precision"  # the inference precision an OpenVINO file is meant for: f32, bf16, int8
META_KEYS = (META_CLASS_NAMES, META_PREPROCESSING, META_SPEC, META_OUTPUTS, META_INPUT, META_NMS, META_QUANTIZATION,
             META_PRECISION)

RAW_OUTPUTS = ("boxes", "scores")
NMS_OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")
# Inputs [1] float32 of an NMS-inside graph besides `images`; in an .onnx each has the export's value as its
# default (an initializer of the same name), so a caller that feeds `images` alone gets those.
THRESHOLD_INPUTS = ("score_threshold", "iou_threshold")


class _NonMaxSuppressionOp(torch.autograd.Function):
    """The ONNX `NonMaxSuppression` op for the TorchScript exporter; its eager forward only fakes the output shape."""

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_per_class: torch.Tensor,
                iou_threshold: torch.Tensor, score_threshold: torch.Tensor) -> torch.Tensor:
        # Tracing needs a plausible [n, 3] (batch, class, box) index tensor; the symbolic below replaces it.
        return torch.zeros((1, 3), dtype=torch.int64, device=boxes.device)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        # center_point_box=0 means (y1, x1, y2, x2); IoU is symmetric in x and y, so xyxy boxes give the same result.
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold, score_threshold,
                    center_point_box_i=0)


class OnnxNMS(nn.Module):
    """Per-class NMS for export: keep the `top_k` anchors by best class score, ONNX NonMaxSuppression on them,
    then the best `max_detections` (box, class) pairs per image as fixed-size padded outputs. The score and IoU
    thresholds are inputs of the graph (`THRESHOLD_INPUTS`), so they are chosen at run time.

    Export-only: in eager PyTorch the NMS op returns a placeholder.
    """

    def __init__(self, cfg: NMSConfig, pad_anchors: bool = False):
        super().__init__()
        self.cfg = cfg
        # With a dynamic image size the anchor count may be below top_k; zero-score padding keeps top_k valid.
        self.pad_anchors = pad_anchors

    def forward(self, boxes: torch.Tensor, scores: torch.Tensor, score_threshold: torch.Tensor,
                iou_threshold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        b, c, k = boxes.shape[0], scores.shape[2], cfg.top_k
        if self.pad_anchors:
            boxes = torch.cat([boxes, boxes.new_zeros(b, k, 4)], dim=1)
            scores = torch.cat([scores, scores.new_zeros(b, k, c)], dim=1)
        else:
            k = min(k, scores.shape[1])
        _, anchor = scores.amax(dim=2).topk(k, dim=1)  # [B, k], like super-gradients' YoloNASDecodingModule
        boxes = boxes.gather(1, anchor.unsqueeze(-1).expand(-1, -1, 4))
        scores = scores.gather(1, anchor.unsqueeze(-1).expand(-1, -1, c)).transpose(1, 2).contiguous()  # [B, C, k]
        selected = _NonMaxSuppressionOp.apply(
            boxes, scores, torch.tensor([cfg.max_detections], dtype=torch.int64), iou_threshold, score_threshold)
        # Scatter the kept scores into a dense [B, C * k] map, so one top-k per image picks the best detections
        # with fixed output shapes; unkept pairs stay 0 and NMS only keeps scores above the threshold (>= 0).
        bi, ci, ai = selected[:, 0], selected[:, 1], selected[:, 2]
        kept = scores.reshape(-1).gather(0, (bi * c + ci) * k + ai)
        dense = scores.new_zeros(b, c * k).reshape(-1).scatter(0, bi * (c * k) + ci * k + ai, kept).reshape(b, c * k)
        m = min(cfg.max_detections, c * k)
        det_scores, flat = dense.topk(m, dim=1)
        valid = det_scores > 0
        det_classes = torch.div(flat, k, rounding_mode="floor") * valid
        det_boxes = boxes.gather(1, (flat % k).unsqueeze(-1).expand(-1, -1, 4)) * valid.unsqueeze(-1)
        num_dets = valid.sum(dim=1, keepdim=True)
        if m < cfg.max_detections:  # fewer (class, anchor) pairs than max_detections: pad to the promised size
            pad = cfg.max_detections - m
            det_boxes = nn.functional.pad(det_boxes, (0, 0, 0, pad))
            det_scores, det_classes = nn.functional.pad(det_scores, (0, pad)), nn.functional.pad(det_classes, (0, pad))
        return num_dets, det_boxes, det_scores, det_classes


class ExportWrapper(nn.Module):
    """What the ONNX graph computes: optional uint8 scaling, forward, decode, optional NMS."""

    def __init__(self, model: YoloNAS, uint8_input: bool = False, nms: OnnxNMS | None = None):
        super().__init__()
        self.model = model
        self.uint8_input = uint8_input
        self.nms = nms

    def forward(self, images: torch.Tensor, score_threshold: torch.Tensor | None = None,
                iou_threshold: torch.Tensor | None = None):
        x = images.float() / 255 if self.uint8_input else images
        boxes, scores = self.model.decode(self.model(x))
        return (boxes, scores) if self.nms is None else self.nms(boxes, scores, score_threshold, iou_threshold)


def _metadata(model: YoloNAS, pre: Preprocessing, uint8_input: bool, nms: NMSConfig | None) -> dict[str, str]:
    meta = {
        META_CLASS_NAMES: json.dumps(list(model.class_names)),
        META_PREPROCESSING: json.dumps(pre.to_dict()),
        META_SPEC: model.spec.name,
        META_OUTPUTS: "raw" if nms is None else "nms",
        META_INPUT: "uint8" if uint8_input else "float",
    }
    if nms is not None:
        meta[META_NMS] = json.dumps({"score_threshold": nms.score_threshold, "iou_threshold": nms.iou_threshold,
                                     "top_k": nms.top_k, "max_detections": nms.max_detections})
    return meta


def _simplify(onnx_model):
    """onnxslim's simplified graph when onnxslim imports and succeeds, else the graph unchanged."""
    try:
        import onnxslim  # noqa: PLC0415 - optional dependency
    except ImportError:
        log.info("export: onnxslim not installed, graph left unsimplified")
        return onnx_model
    try:
        return onnxslim.slim(onnx_model)
    except Exception as e:  # noqa: BLE001 - simplification is an optimisation; the plain graph is still valid
        warnings.warn(f"export: onnxslim failed ({e}); writing the unsimplified graph", stacklevel=3)
        return onnx_model


def export_onnx(model: YoloNAS, path: str | Path, *, batch: int | None = 1, image_size: tuple[int, int] | None = None,
                dynamic_size: bool = False, uint8_input: bool = False, nms: NMSConfig | None = None,
                opset: int = 17, simplify: bool = True, threshold_defaults: bool = True) -> Path:
    """Export a fused copy of `model` to ONNX at `path`: input `images` [B, 3, H, W] (float in [0, 1] RGB, or
    uint8), outputs raw `boxes`, `scores` or, with `nms`, `num_dets`, `det_boxes`, `det_scores`, `det_classes`.

    With `nms`, the inputs `score_threshold` and `iou_threshold` ([1] float32) choose the thresholds per call;
    `nms`'s are their defaults (unless `threshold_defaults` is False: then they must be fed, as an OpenVINO IR
    needs them). `batch=None` makes the batch dimension dynamic; `dynamic_size` the height and width.
    """
    if batch is not None and batch < 1:
        raise InputError(f"export batch must be at least 1 or None (dynamic), got {batch}")
    if nms is not None and not (nms.multi_label and not nms.class_agnostic):
        raise InputError("NMS in the ONNX graph is per class over every class score (multi-label); "
                         "class_agnostic and best-class-only are not available in the export")
    pre = _export_preprocessing(model, image_size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fused deep copy on the CPU: the caller's model keeps its training-time blocks, device and mode.
    fused = copy.deepcopy(model).cpu().float().eval()
    if not fused.is_fused:
        fused.fuse()
    _trace(_wrapper(fused, pre, uint8_input, nms, dynamic_size), path, pre, batch=batch, dynamic_size=dynamic_size,
           uint8_input=uint8_input, nms=nms, opset=opset)
    _finish(path, _metadata(fused, pre, uint8_input, nms), simplify,
            _threshold_tensors(nms) if nms is not None and threshold_defaults else None)
    log.info("export: %s (%s outputs, %s input, batch %s, %dx%d%s)", path, "raw" if nms is None else "NMS",
             "uint8" if uint8_input else "float", batch or "dynamic", *pre.image_size,
             " dynamic size" if dynamic_size else "")
    return path


def _export_preprocessing(model: YoloNAS, image_size: tuple[int, int] | None) -> Preprocessing:
    pre = copy.deepcopy(model.preprocessing)
    if image_size is None:
        return pre
    return Preprocessing(image_size=tuple(image_size), longest_side=pre.longest_side, pad=pre.pad,
                         pad_value=pre.pad_value)


def _wrapper(fused: YoloNAS, pre: Preprocessing, uint8_input: bool, nms: NMSConfig | None,
             dynamic_size: bool) -> ExportWrapper:
    """What the graph computes, NMS included when asked for."""
    h, w = pre.image_size
    nms_module = None
    if nms is not None:
        n_anchors = sum((h // s) * (w // s) for s in fused.spec.head.strides)
        nms_module = OnnxNMS(nms, pad_anchors=dynamic_size or n_anchors < nms.top_k)
    return ExportWrapper(fused, uint8_input, nms_module).eval()


def _trace(wrapper: ExportWrapper, path: Path, pre: Preprocessing, *, batch: int | None, dynamic_size: bool,
           uint8_input: bool, nms: NMSConfig | None, opset: int) -> None:
    """The TorchScript exporter on an example input, with the graph's names and dynamic axes."""
    example = torch.full((batch or 2, 3, *pre.image_size), 114, dtype=torch.uint8)  # a dynamic batch traced at 2
    if not uint8_input:  # (at 1 the exporter would specialise it)
        example = example.float() / 255
    outputs = RAW_OUTPUTS if nms is None else NMS_OUTPUTS
    inputs, args = ("images",), (example,)
    if nms is not None:
        inputs, args = ("images", *THRESHOLD_INPUTS), (example, *_threshold_tensors(nms))
    dynamic_axes: dict[str, dict[int, str]] = {}
    if batch is None:
        dynamic_axes = {name: {0: "batch"} for name in ("images", *outputs)}
    if dynamic_size:
        dynamic_axes.setdefault("images", {}).update({2: "height", 3: "width"})
        if nms is None:
            for name in RAW_OUTPUTS:
                dynamic_axes.setdefault(name, {})[1] = "anchors"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is the deliberate choice: see README
        torch.onnx.export(wrapper, args, str(path), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic_axes or None, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def _finish(path: Path, metadata: dict[str, str], simplify: bool,
            threshold_defaults: tuple[torch.Tensor, torch.Tensor] | None) -> None:
    """Simplify the traced file, give its threshold inputs their defaults, write its metadata; check and save."""
    import onnx  # noqa: PLC0415 - only export needs the onnx package
    import onnx.numpy_helper  # noqa: PLC0415

    onnx_model = onnx.load(str(path))
    if simplify:
        onnx_model = _simplify(onnx_model)
    if threshold_defaults is not None:
        onnx_model.graph.initializer.extend(onnx.numpy_helper.from_array(t.numpy(), name)
                                            for name, t in zip(THRESHOLD_INPUTS, threshold_defaults))
    del onnx_model.metadata_props[:]
    for key, value in metadata.items():
        onnx_model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(onnx_model)
    onnx.save(onnx_model, str(path))


def _threshold_tensors(nms: NMSConfig) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([nms.score_threshold], dtype=torch.float32),
            torch.tensor([nms.iou_threshold], dtype=torch.float32))


def without_threshold_defaults(path: Path) -> bytes:
    """An NMS-inside .onnx with its threshold defaults taken out, serialized: OpenVINO reads an input that has a
    default as a constant, so it must see the thresholds as plain inputs to let them be chosen per call."""
    import onnx  # noqa: PLC0415 - the onnx extra

    model = onnx.load(str(path))
    kept = [t for t in model.graph.initializer if t.name not in THRESHOLD_INPUTS]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model.SerializeToString()


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, read without loading its weights."""
    import onnx  # noqa: PLC0415 - the onnx extra

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise InputError(f"{path}: not an ONNX file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    return {p.key: p.value for p in model.metadata_props}


def export_openvino(onnx_path: str | Path, xml_path: str | Path, precision: str = "f32", model=None,
                    metadata: dict[str, str] | None = None) -> Path:
    """Convert one of our ONNX exports (or the already converted `model`) to an OpenVINO IR (.xml + .bin) that
    keeps its metadata and says the precision it is meant to run at (f32, bf16, int8)."""
    try:
        import openvino as ov  # noqa: PLC0415 - optional dependency
    except ImportError as e:
        raise InputError("converting to OpenVINO needs openvino: pip install 'yolonas[openvino]'") from e
    if precision not in ("f32", "bf16", "int8"):
        raise InputError(f"OpenVINO precision {precision!r}: use f32, bf16 or int8")
    if precision == "bf16":
        openvino_precision("bf16")  # says now, in one line, when this CPU will run the file in f32 instead
    meta = {**read_onnx_metadata(Path(onnx_path)), **(metadata or {}), META_PRECISION: precision}
    if model is None:
        model = ov.convert_model(str(onnx_path))
    for key in META_KEYS:
        if key in meta:
            model.set_rt_info(meta[key], ["yolonas", key])
    xml_path = Path(xml_path)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    # Weights stay f32 in the file: OpenVINO's default fp16 compression would round them before any precision choice.
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    log.info("export: %s (OpenVINO IR, %s)", xml_path, precision)
    return xml_path


def export_file(model: YoloNAS, output: str | Path, fmt: str = "onnx", *, precision: str = "f32",
                **onnx_options) -> Path:
    """`model` as `output`: an ONNX file, or an OpenVINO IR meant for `precision` (f32, bf16). The IR's
    intermediate ONNX lives in a temporary folder, so no file beside `output` is written or replaced."""
    import tempfile  # noqa: PLC0415

    if fmt == "onnx":
        if precision != "f32":
            raise InputError(f"--{precision} is an OpenVINO inference precision: use --format openvino (or --int8 "
                             "for INT8 on ONNX Runtime)")
        return export_onnx(model, output, **onnx_options)
    if fmt != "openvino":
        raise InputError(f"--format {fmt}: use onnx or openvino (TensorRT builds its engine from the .onnx)")
    with tempfile.TemporaryDirectory(prefix="yolonas-export-") as tmp:
        # An IR keeps the NMS thresholds as plain inputs: OpenVINO would freeze inputs that have defaults.
        onnx_path = export_onnx(model, Path(tmp) / "model.onnx", threshold_defaults=False, **onnx_options)
        return export_openvino(onnx_path, output, precision=precision)
