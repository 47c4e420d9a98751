"""Quantization: calibration, post-training INT8 (QDQ ONNX), per-layer sensitivity, selective INT8."""
