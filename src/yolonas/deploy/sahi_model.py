"""YOLO-NAS as a SAHI `DetectionModel`, so SAHI's sliced prediction can drive any of our models.

`pip install 'yolonas[sahi]'`. The model is anything `open_backend` opens (a checkpoint, a published name, an
exported .onnx or OpenVINO .xml, INT8 included) or a ready YoloNAS; each slice goes through our `Predictor`, so
pre- and post-processing are those of `yolonas predict`. Slices of one batch run as one forward pass
(`perform_batch_inference`), so SAHI's `batch_size` batches the network too.

    from sahi.predict import get_sliced_prediction
    model = YoloNasSahiModel(model_path="runs/train/x/weights/best.pt", confidence_threshold=0.25)
    result = get_sliced_prediction("big.jpg", model, slice_height=640, slice_width=640)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from yolonas.errors import InputError

try:
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction
except ImportError as e:  # the optional extra is not installed
    raise InputError("the SAHI adapter needs the sahi package: pip install 'yolonas[sahi]'") from e

from yolonas.deploy.open import open_backend
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.predictor import Predictor


class YoloNasSahiModel(DetectionModel):
    """A SAHI detection model around our Predictor; `nms` sets the IoU and limits, `confidence_threshold` the
    score threshold (strictly above it, as SAHI filters), `image_size` the square input (default: the model's)."""

    def __init__(self, *args: Any, nms: NMSConfig | None = None, batch_size: int = 8, **kwargs: Any):
        self.nms, self.batch_size = nms or NMSConfig(), batch_size
        self.predictor: Predictor | None = None
        super().__init__(*args, **kwargs)

    def load_model(self) -> None:
        """Open `model_path` as `yolonas predict --weights` would."""
        if not self.model_path:
            raise InputError("YoloNasSahiModel: give model_path (a checkpoint, published name or exported file) "
                             "or model (a YoloNAS)")
        self.set_model(open_backend(self.model_path, imgsz=self.image_size, device=str(self.device)))

    def set_model(self, model: Any, **kwargs: Any) -> None:
        """Use a YoloNAS module or any of our backends."""
        nms = NMSConfig(score_threshold=self.confidence_threshold, iou_threshold=self.nms.iou_threshold,
                        top_k=self.nms.top_k, max_detections=self.nms.max_detections,
                        multi_label=self.nms.multi_label, class_agnostic=self.nms.class_agnostic)
        self.model = model
        self.predictor = Predictor(model, nms=nms, device=str(self.device), batch_size=self.batch_size)
        names = self.predictor.class_names or []
        self.category_mapping = {str(i): name for i, name in enumerate(names)}

    def perform_inference(self, image: np.ndarray) -> None:
        """Detect in one RGB uint8 HWC image."""
        self.perform_batch_inference([image])

    def perform_batch_inference(self, images: list[np.ndarray]) -> None:
        """Detect in a batch of slices, in one forward pass per `batch_size` slices."""
        if self.predictor is None:
            raise InputError("YoloNasSahiModel: no model loaded")
        self._original_predictions = self.predictor.predict_arrays([np.ascontiguousarray(im) for im in images])
        self._original_shapes = [im.shape for im in images]

    @property
    def num_categories(self) -> int:
        return len(self.category_mapping or {})

    @property
    def has_mask(self) -> bool:
        return False

    @property
    def category_names(self) -> list[str]:
        return list((self.category_mapping or {}).values())

    def _create_object_prediction_list_from_original_predictions(
        self, shift_amount_list: list[list[int | float]] | None = None,
        full_shape_list: list[list[int | float]] | None = None,
    ) -> None:
        """Our Detections -> one list of ObjectPrediction per image, shifted by SAHI's per-slice offsets."""
        dets = self._original_predictions or []
        shifts = _per_image(shift_amount_list, len(dets), [0, 0])
        shapes = _per_image(full_shape_list, len(dets), None)
        self._object_prediction_list_per_image = [
            [ObjectPrediction(bbox=box.tolist(), category_id=int(c), category_name=d.class_names[int(c)],
                              score=float(s), shift_amount=shift, full_shape=shape)
             for box, s, c in zip(d.boxes, d.scores, d.class_ids)]
            for d, shift, shape in zip(dets, shifts, shapes)
        ]


def _per_image(values: list | None, n: int, default) -> list:
    """SAHI passes one [x, y] (or [h, w]) for a single image or a list of them: always a list of n."""
    if not values:
        return [default] * n
    if not isinstance(values[0], list | tuple):
        return [list(values)] * n
    return list(values) + [values[-1]] * (n - len(values))
