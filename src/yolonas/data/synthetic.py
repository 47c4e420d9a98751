"""A small generated YOLO-format data set (coloured shapes on textured backgrounds) for demos and tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from yolonas.data.yolo import write_yolo_labels

CLASSES = ("circle", "rectangle", "triangle")


def textured_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour blobs, grain and a few lines, so that shapes do not sit on a flat colour."""
    coarse = rng.integers(40, 216, size=(rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    image += rng.integers(-12, 13, size=(h, w, 3), dtype=np.int16)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 7)):
        p1 = (int(rng.integers(w)), int(rng.integers(h)))
        p2 = (int(rng.integers(w)), int(rng.integers(h)))
        cv2.line(image, p1, p2, tuple(int(c) for c in rng.integers(0, 256, 3)), int(rng.integers(1, 3)))
    return image


def draw_shape(image: np.ndarray, cls: int, box: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Draw class `cls` filling integer box (x1, y1, x2, y2) inclusive; returns its exact xyxy pixel-edge box."""
    x1, y1, x2, y2 = (int(v) for v in box)
    if CLASSES[cls] == "circle":
        r = min(x2 - x1, y2 - y1) // 2
        cx, cy = x1 + r, y1 + r
        cv2.circle(image, (cx, cy), r, colour, thickness=-1, lineType=cv2.LINE_8)
        return np.array([cx - r, cy - r, cx + r + 1, cy + r + 1], np.float32)
    if CLASSES[cls] == "rectangle":
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness=-1)
        return np.array([x1, y1, x2 + 1, y2 + 1], np.float32)
    points = np.array([[(x1 + x2) // 2, y1], [x1, y2], [x2, y2]], np.int32)
    cv2.fillPoly(image, [points], colour, lineType=cv2.LINE_8)
    return np.array([x1, y1, x2 + 1, y2 + 1], np.float32)


def synthetic_image(rng: np.random.Generator, h: int, w: int, max_objects: int = 5
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB image, boxes [n, 4] xyxy pixels, classes [n]) with 1..max_objects non-overlapping shapes."""
    image = textured_background(rng, h, w)
    boxes, classes = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = rng.uniform(0.12, 0.4) * min(h, w)
            bw, bh = int(side * rng.uniform(0.7, 1.3)), int(side * rng.uniform(0.7, 1.3))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            cand = np.array([x1, y1, x1 + bw, y1 + bh], np.float32)
            if all(cand[2] < b[0] or b[2] < cand[0] or cand[3] < b[1] or b[3] < cand[1] for b in boxes):
                break
        else:
            continue
        cls = int(rng.integers(len(CLASSES)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        boxes.append(draw_shape(image, cls, cand, colour))
        classes.append(cls)
    return image, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64)


def make_synthetic_dataset(folder: str | Path, n_images: int = 48, n_val: int | None = None, size: int = 256,
                           seed: int = 0) -> Path:
    """Write train/ and val/ splits (images/ + labels/) and a data.yaml under `folder`; returns the data.yaml path.

    Images are `size` wide, square or 3:4; `n_val` defaults to a quarter of `n_images` (at least 4).
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    n_val = max(4, n_images // 4) if n_val is None else n_val
    for split, count in (("train", n_images), ("val", n_val)):
        (folder / split / "images").mkdir(parents=True, exist_ok=True)
        for k in range(count):
            h, w = (size, size) if rng.random() < 0.5 else (size * 3 // 4, size)
            image, boxes, classes = synthetic_image(rng, h, w)
            name = f"{split}_{k:04d}"
            cv2.imwrite(str(folder / split / "images" / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            write_yolo_labels(folder / split / "labels" / f"{name}.txt", boxes, classes, (h, w))
    data_yaml = folder / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": ".", "train": "train/images", "val": "val/images",
                                         "nc": len(CLASSES), "names": list(CLASSES)}, sort_keys=False))
    return data_yaml
