"""Inference: letterbox, backend, NMS, Detections, tiles of large images; drawing and video writing."""

from yolonas.infer.backend import Backend, FunctionBackend, TorchBackend, checked_device
from yolonas.infer.detections import Detections
from yolonas.infer.draw import draw_detections
from yolonas.infer.letterbox import (
    LetterboxInfo,
    batch_boxes_to_original,
    boxes_to_original,
    letterbox,
    letterbox_batch,
)
from yolonas.infer.postprocess import PREDICT_NMS, VAL_NMS, NMSConfig, postprocess
from yolonas.infer.predictor import Predictor
from yolonas.infer.sources import ImageSource, read_image
from yolonas.infer.tiling import TileConfig, Tiler
from yolonas.infer.video import VideoSink

__all__ = [
    "Backend", "Detections", "FunctionBackend", "ImageSource", "LetterboxInfo", "NMSConfig", "PREDICT_NMS",
    "Predictor", "TileConfig", "Tiler", "TorchBackend", "VAL_NMS", "VideoSink", "batch_boxes_to_original",
    "boxes_to_original", "checked_device", "draw_detections", "letterbox", "letterbox_batch", "postprocess",
    "read_image",
]
