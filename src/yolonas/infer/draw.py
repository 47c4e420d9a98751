"""Drawing detections on an image: one fixed colour per class, labels readable on any background."""

from __future__ import annotations

import cv2
import numpy as np

from yolonas.infer.detections import Detections

# 20 well-separated RGB colours; class i uses PALETTE[i % 20], so a class keeps its colour across images.
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40),
    (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def class_color(class_id: int) -> tuple[int, int, int]:
    """The RGB colour of a class."""
    return PALETTE[int(class_id) % len(PALETTE)]


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    # Black on light label backgrounds, white on dark ones (ITU-R BT.601 luma).
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def draw_detections(image_rgb: np.ndarray, det: Detections, thickness: int = 2, show_score: bool = True) -> np.ndarray:
    """A copy of the RGB image with each detection's box and label (class name, and score) drawn on it."""
    out = np.ascontiguousarray(image_rgb).copy()
    h, w = out.shape[:2]
    font, font_scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, min(h, w) / 1000)
    text_thickness = max(1, thickness - 1)
    # Lowest scores first, so the most confident boxes and labels end up on top.
    for i in np.argsort(det.scores, kind="stable"):
        x1, y1, x2, y2 = (int(round(float(v))) for v in det.boxes[i])
        cls = int(det.class_ids[i])
        color = class_color(cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        name = det.class_names[cls] if cls < len(det.class_names) else str(cls)
        label = f"{name} {det.scores[i]:.2f}" if show_score else name
        (tw, th), baseline = cv2.getTextSize(label, font, font_scale, text_thickness)
        # Above the box when there is room, else just inside its top edge; never off the right of the image.
        ty = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1
        tx = min(max(x1, 0), max(w - tw - 2, 0))
        cv2.rectangle(out, (tx, ty), (tx + tw + 2, ty + th + baseline + 2), color, cv2.FILLED)
        cv2.putText(out, label, (tx + 1, ty + th + 1), font, font_scale, _text_color(color), text_thickness,
                    cv2.LINE_AA)
    return out
