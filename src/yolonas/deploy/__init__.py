"""Deployment: ONNX export (raw or with NMS inside) and runtime backends for exported files."""

from yolonas.deploy.backends import (
    OnnxRuntimeBackend,
    OpenVINOBackend,
    TensorRTBackend,
    load_backend,
)
from yolonas.deploy.export import export_onnx, export_openvino
from yolonas.deploy.open import open_predictor

__all__ = ["OnnxRuntimeBackend", "OpenVINOBackend", "TensorRTBackend", "export_onnx", "export_openvino",
           "load_backend", "open_predictor"]
