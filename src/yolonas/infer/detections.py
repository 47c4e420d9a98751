"""Detections: the boxes found in one image, in original-image pixels, and their exports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yolonas.errors import InputError


@dataclass
class Detections:
    """Boxes found in one image: xyxy float32 in original pixels, sorted by score (highest first)."""

    boxes: np.ndarray  # [n, 4] float32 x1, y1, x2, y2
    scores: np.ndarray  # [n] float32
    class_ids: np.ndarray  # [n] int64, 0..C-1
    class_names: list[str]  # every class of the model, indexed by class id
    image_shape: tuple[int, int]  # (height, width) of the original image
    path: str | None = None  # file the image came from (a video frame is "clip.mp4#12")

    def __len__(self) -> int:
        return len(self.boxes)

    def to_json(self) -> dict:
        """A JSON-ready dict: file, width, height and one entry per detection."""
        h, w = self.image_shape
        return {
            "file": self.path,
            "width": int(w),
            "height": int(h),
            "detections": [
                {"box": [round(float(v), 2) for v in box], "score": round(float(score), 5), "class_id": int(cls),
                 "class_name": self.class_names[cls]}
                for box, score, cls in zip(self.boxes, self.scores, self.class_ids)
            ],
        }

    def to_coco(self, image_id: int, category_ids: list[int] | None = None) -> list[dict]:
        """COCO result dicts (bbox xywh in original pixels); category id = `category_ids[class]`, else class + 1."""
        if category_ids is not None and len(category_ids) < len(self.class_names):
            raise InputError(f"{len(category_ids)} category ids given for {len(self.class_names)} classes")
        xywh = self.boxes.astype(np.float64).copy()
        xywh[:, 2:] -= xywh[:, :2]
        xywh = np.round(xywh, 3)
        cats = [int(c) + 1 for c in self.class_ids] if category_ids is None else [
            int(category_ids[c]) for c in self.class_ids]
        return [{"image_id": image_id, "category_id": cat, "bbox": box.tolist(), "score": float(score)}
                for cat, box, score in zip(cats, xywh, self.scores)]

    def to_supervision(self):
        """A `supervision.Detections` (needs the optional `supervision` package)."""
        try:
            import supervision as sv  # noqa: PLC0415 - optional dependency, imported only when asked for
        except ImportError as e:
            raise InputError("to_supervision() needs the supervision package: pip install supervision") from e
        names = np.array([self.class_names[c] for c in self.class_ids], dtype=str)
        return sv.Detections(xyxy=self.boxes.astype(np.float32), confidence=self.scores.astype(np.float32),
                             class_id=self.class_ids.astype(int), data={"class_name": names})
