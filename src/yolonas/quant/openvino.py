"""INT8 for OpenVINO: NNCF's post-training quantization of a float yolonas .onnx, calibrated on our letterboxed
images, or our QDQ .onnx converted as it is. Either way the IR keeps our metadata, says it is INT8, and records how.

NNCF is OpenVINO's own quantizer: it places FakeQuantize nodes where the CPU plugin has INT8 kernels and fuses them
with its graph transformations. The network's convs, adds, concats and pools are quantized; the box decode and the
scores (outside the network's node names) stay float, as in our QDQ files.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from pathlib import Path

import numpy as np

from yolonas.deploy.export import META_QUANTIZATION, export_openvino
from yolonas.errors import InputError
from yolonas.quant.calibration import NETWORK_PREFIXES, load_batch, read_model_info
from yolonas.quant.ptq import module_name

log = logging.getLogger(__name__)

QUANTIZERS = ("nncf", "qdq")
PRESETS = ("performance", "mixed")  # symmetric activations (fastest on CPUs) or asymmetric (uint8 like our QDQ)


def _nncf():
    try:
        import nncf  # noqa: PLC0415 - optional dependency
    except ImportError as e:
        raise InputError("OpenVINO INT8 with NNCF needs nncf: pip install 'yolonas[openvino]' (or use "
                         "--quantizer qdq)") from e
    return nncf


def ignored_scope(float_nodes=()):
    """NNCF's IgnoredScope: everything outside the network (decode, scores), the head's glue, and `float_nodes`.

    OpenVINO names a converted conv `<onnx node>/WithoutBiases` and its bias add `<onnx node>`, so each float node
    is matched as a prefix."""
    nncf = _nncf()
    network = "|".join(re.escape(p) for p in NETWORK_PREFIXES)
    patterns = [f"^(?!{network}).*", r"^/model/heads/[A-Z].*"]
    patterns += [f"^{re.escape(node)}(/.*)?$" for node in float_nodes]
    return nncf.IgnoredScope(patterns=patterns, validate=False)


def quantize_nncf(float_onnx: str | Path, files: list[Path], output: str | Path, *, float_nodes=(),
                  preset: str = "performance", seed: int = 0, mode: str = "ptq", chunk: int = 8) -> Path:
    """NNCF INT8 of `float_onnx` calibrated on `files` (letterboxed as the Predictor does) to an IR at `output`."""
    import openvino as ov  # noqa: PLC0415 - optional dependency

    nncf = _nncf()
    if preset not in PRESETS:
        raise InputError(f"NNCF preset {preset!r}: use one of {', '.join(PRESETS)}")
    info = read_model_info(float_onnx)
    images = [load_batch(files[i:i + chunk], info.preprocessing, info.uint8_input) for i in range(0, len(files), chunk)]
    samples = [im[None] for batch in images for im in batch]  # one [1, 3, H, W] array per image
    model = ov.convert_model(str(float_onnx))
    log.info("NNCF: calibrating %s on %d images (%s preset)", Path(float_onnx).name, len(samples), preset)
    nncf.set_log_level(logging.WARNING)  # its INFO lists every op it leaves float
    # Its progress bars go to stdout, which `--json -` keeps for the result.
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(
            model, nncf.Dataset(samples), subset_size=len(samples), target_device=nncf.TargetDevice.CPU,
            preset=nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
            ignored_scope=ignored_scope(float_nodes))
    meta = {META_QUANTIZATION: json.dumps({
        "mode": mode, "format": "OpenVINO IR (NNCF FakeQuantize)", "quantizer": "nncf", "preset": preset,
        "weights": "int8 per-channel symmetric",
        "activations": "int8 symmetric per-tensor" if preset == "performance" else "uint8 asymmetric per-tensor",
        "calibration_images": len(samples), "seed": seed, "float_layers": [module_name(n) for n in float_nodes],
        "nncf": nncf.__version__, "openvino": ov.__version__})}
    return export_openvino(float_onnx, output, precision="int8", model=quantized, metadata=meta)


def qdq_to_openvino(qdq_onnx: str | Path, output: str | Path) -> Path:
    """Our QDQ .onnx as an OpenVINO IR: OpenVINO turns each QuantizeLinear/DequantizeLinear pair into FakeQuantize."""
    return export_openvino(qdq_onnx, output, precision="int8")


def output_arrays(backend, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(boxes, scores) of an exported-model backend on a float batch, one image at a time (static batch-1 files)."""
    import torch  # noqa: PLC0415

    x = torch.from_numpy(batch)
    x = x.float() / 255 if x.dtype == torch.uint8 else x  # a uint8-input file's calibration batch
    outs = [backend(x[i:i + 1]) for i in range(len(x))]
    return np.concatenate([b.numpy() for b, _ in outs]), np.concatenate([s.numpy() for _, s in outs])
