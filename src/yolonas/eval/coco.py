"""COCO box metrics through faster-coco-eval, and a detection confusion matrix, from COCO-format data."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from faster_coco_eval import COCO, COCOeval_faster
from rich.table import Table
from torchvision.ops import box_convert, box_iou

from yolonas.errors import DataError, InputError

# pycocotools' order of the 12 summary numbers (COCOeval.stats).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass
class Metrics:
    """The 12 COCO box summary numbers (0..1), AP per class, and the precision array behind them."""

    AP: float = 0.0
    AP50: float = 0.0
    AP75: float = 0.0
    APs: float = 0.0
    APm: float = 0.0
    APl: float = 0.0
    AR1: float = 0.0
    AR10: float = 0.0
    AR100: float = 0.0
    ARs: float = 0.0
    ARm: float = 0.0
    ARl: float = 0.0
    per_class: dict[str, float] = field(default_factory=dict)
    per_class_AP50: dict[str, float] = field(default_factory=dict)
    num_images: int = 0
    num_detections: int = 0
    # Names of the K axis of `precision`, in the ground truth's sorted category-id order.
    class_names: list[str] = field(default_factory=list)
    # faster-coco-eval's eval["precision"]: [T=10 IoUs 0.5:0.95, R=101 recalls, K classes, A=4 areas, M=3 maxDets];
    # -1 where a class has no ground truth.
    precision: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def stats(self) -> list[float]:
        """The 12 summary numbers in pycocotools' order."""
        return [getattr(self, name) for name in STAT_NAMES]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without the precision array)."""
        out = asdict(self)
        out.pop("precision")
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """The metrics as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self, per_class: bool = True) -> Table:
        """A rich Table (print it with rich) of AP per class and the summary numbers."""
        table = Table(title=f"COCO box metrics: {self.num_images} images, {self.num_detections} detections")
        table.add_column("class")
        for name in STAT_NAMES[:6]:
            table.add_column(name, justify="right")
        if per_class and self.precision is not None:
            for k, name in enumerate(self.class_names):
                if name in self.per_class:
                    table.add_row(name, *(_fmt(_mean_valid(p)) for p in _class_slices(self.precision, k)))
            table.add_section()
        table.add_row("all", *(f"{getattr(self, name):.3f}" for name in STAT_NAMES[:6]), style="bold")
        table.caption = " ".join(f"{name} {getattr(self, name):.3f}" for name in STAT_NAMES[6:])
        return table


def _class_slices(precision: np.ndarray, k: int) -> list[np.ndarray]:
    """Class k's precision behind AP, AP50, AP75, APs, APm, APl (IoU index 5 is 0.75; maxDets 100)."""
    at_k = precision[:, :, k, :, -1]
    return [at_k[:, :, 0], at_k[0, :, 0], at_k[5, :, 0], at_k[:, :, 1], at_k[:, :, 2], at_k[:, :, 3]]


def _mean_valid(precision: np.ndarray) -> float | None:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def coco_metrics(
    gt: dict | str | Path,
    predictions: list[dict] | str | Path,
    class_names: list[str] | None = None,
) -> Metrics:
    """COCO box metrics of `predictions` (COCO results) against the ground truth `gt` (COCO JSON dict or file)."""
    gt_data = load_ground_truth(gt)
    image_ids = {image["id"] for image in gt_data["images"]}
    category_ids = sorted(category["id"] for category in gt_data["categories"])
    dets = load_predictions(predictions, image_ids, set(category_ids))
    names = _class_names(gt_data, category_ids, class_names)

    quiet = lambda *args, **kwargs: None
    coco_gt = COCO(gt_data, print_function=quiet)
    coco_dt = coco_gt.loadRes(dets)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()

    # pycocotools reports -1 for an undefined number (no ground truth in that area range); we report 0.
    stats = [max(float(value), 0.0) for value in evaluator.stats[: len(STAT_NAMES)]]
    precision = np.asarray(evaluator.eval["precision"])
    per_class, per_class_50 = {}, {}
    for k, name in enumerate(names):
        ap, ap50 = (_mean_valid(p) for p in _class_slices(precision, k)[:2])
        if ap is not None:  # a class without ground truth has no AP
            per_class[name], per_class_50[name] = ap, ap50
    return Metrics(
        **dict(zip(STAT_NAMES, stats)),
        per_class=per_class,
        per_class_AP50=per_class_50,
        num_images=len(image_ids),
        num_detections=len(dets),
        class_names=names,
        precision=precision,
    )


def confusion_matrix(
    gt: dict | str | Path,
    predictions: list[dict] | str | Path,
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
) -> np.ndarray:
    """(C+1)x(C+1) counts, rows = predicted class, columns = true class, index C = background.

    Class index k is the k-th category of the ground truth in sorted id order. Predictions and ground-truth
    boxes are matched across classes, greedily by IoU (>= iou_threshold) per image; an unmatched prediction
    counts in the background column, a missed ground-truth box in the background row. Crowd boxes and
    predictions scoring below score_threshold are left out.
    """
    gt_data = load_ground_truth(gt)
    category_ids = sorted(category["id"] for category in gt_data["categories"])
    if len(category_ids) != num_classes:
        raise InputError(f"{_name(gt, 'ground truth')}: {len(category_ids)} categories but num_classes={num_classes}")
    index = {category_id: k for k, category_id in enumerate(category_ids)}
    dets = load_predictions(predictions, {image["id"] for image in gt_data["images"]}, set(category_ids))

    gt_by_image: dict[int, list[dict]] = {image["id"]: [] for image in gt_data["images"]}
    for ann in gt_data["annotations"]:
        if not ann["iscrowd"]:
            gt_by_image[ann["image_id"]].append(ann)
    dt_by_image: dict[int, list[dict]] = {image_id: [] for image_id in gt_by_image}
    for det in dets:
        if det["score"] >= score_threshold:
            dt_by_image[det["image_id"]].append(det)

    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    for image_id, gts in gt_by_image.items():
        gt_boxes, gt_classes = _boxes_and_classes(gts, index)
        dt_boxes, dt_classes = _boxes_and_classes(dt_by_image[image_id], index)
        gt_i, dt_i = _greedy_match(box_iou(gt_boxes, dt_boxes), iou_threshold)
        np.add.at(matrix, (dt_classes[dt_i], gt_classes[gt_i]), 1)
        missed = np.ones(len(gt_classes), dtype=bool)
        missed[gt_i] = False
        np.add.at(matrix, (background, gt_classes[missed]), 1)
        false_pos = np.ones(len(dt_classes), dtype=bool)
        false_pos[dt_i] = False
        np.add.at(matrix, (dt_classes[false_pos], background), 1)
    return matrix


def _boxes_and_classes(anns: list[dict], index: dict[int, int]) -> tuple[torch.Tensor, np.ndarray]:
    boxes = torch.tensor([ann["bbox"] for ann in anns], dtype=torch.float32).reshape(-1, 4)
    classes = np.array([index[ann["category_id"]] for ann in anns], dtype=np.int64)
    return box_convert(boxes, "xywh", "xyxy"), classes


def _greedy_match(iou: torch.Tensor, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rows, columns) of the pairs that greedy matching by descending IoU keeps."""
    iou = torch.where(iou >= threshold, iou, torch.zeros_like(iou))
    rows, cols = [], []
    # A pair that is the best of both its row and its column is exactly one that greedy matching takes; taking
    # all of them at once and repeating on what is left gives the greedy result in a few vectorised rounds.
    while iou.numel() and bool((iou > 0).any()):
        best_col = iou.argmax(dim=1)
        best_row = iou.argmax(dim=0)
        r = torch.arange(iou.shape[0])
        mutual = (best_row[best_col] == r) & (iou[r, best_col] > 0)
        r, c = r[mutual], best_col[mutual]
        rows.append(r)
        cols.append(c)
        iou[r, :] = 0
        iou[:, c] = 0
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return torch.cat(rows).numpy(), torch.cat(cols).numpy()


def load_ground_truth(gt: dict | str | Path) -> dict:
    """A checked, clean copy of a COCO ground truth (dict or JSON file) with integer image ids."""
    source = _name(gt, "ground truth")
    data = _read_json(gt, source) if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, dict) or any(key not in data for key in ("images", "annotations", "categories")):
        raise DataError(f"{source}: not a COCO ground truth (needs 'images', 'annotations' and 'categories')")
    try:
        images = [
            {
                "id": _image_id(image["id"], source),
                "width": int(image["width"]),
                "height": int(image["height"]),
                "file_name": str(image.get("file_name", "")),
            }
            for image in data["images"]
        ]
        categories = [{"id": int(cat["id"]), "name": str(cat["name"])} for cat in data["categories"]]
        annotations = []
        # Fresh ids from 1: faster-coco-eval takes annotation id 0 for "unmatched".
        for i, ann in enumerate(data["annotations"], start=1):
            bbox = [float(v) for v in ann["bbox"]]
            annotations.append(
                {
                    "id": i,
                    "image_id": _image_id(ann["image_id"], source),
                    "category_id": int(ann["category_id"]),
                    "bbox": bbox,
                    # A box-only data set has no segmentation area; the box area stands in for it.
                    "area": float(ann.get("area", bbox[2] * bbox[3])),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise DataError(f"{source}: malformed COCO entry ({type(e).__name__}: {e})") from e
    image_ids = {image["id"] for image in images}
    category_ids = {cat["id"] for cat in categories}
    if len(image_ids) != len(images):
        raise DataError(f"{source}: duplicate image ids")
    for ann in annotations:
        if ann["image_id"] not in image_ids:
            raise DataError(f"{source}: annotation on unknown image id {ann['image_id']}")
        if ann["category_id"] not in category_ids:
            raise DataError(f"{source}: annotation with unknown category id {ann['category_id']}")
    return {"images": images, "annotations": annotations, "categories": categories}


def load_predictions(predictions: list[dict] | str | Path, image_ids: set[int], category_ids: set[int]) -> list[dict]:
    """Checked copies of COCO results (image_id, category_id, bbox xywh, score), extra keys dropped."""
    source = _name(predictions, "predictions")
    data = _read_json(predictions, source) if isinstance(predictions, (str, Path)) else predictions
    if not isinstance(data, list):
        raise DataError(f"{source}: COCO results must be a list of detections, got {type(data).__name__}")
    try:
        dets = [
            {
                "image_id": _image_id(det["image_id"], source),
                "category_id": int(det["category_id"]),
                "bbox": [float(v) for v in det["bbox"]],
                "score": float(det["score"]),
            }
            for det in data
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{source}: malformed detection ({type(e).__name__}: {e})") from e
    for det in dets:
        if len(det["bbox"]) != 4:
            raise DataError(f"{source}: bbox {det['bbox']} is not [x, y, w, h]")
        if det["image_id"] not in image_ids:
            raise DataError(f"{source}: image id {det['image_id']} is not in the ground truth")
        if det["category_id"] not in category_ids:
            raise DataError(
                f"{source}: category id {det['category_id']} is not a ground-truth category "
                "(use the data set's own category ids)"
            )
    return dets


def _image_id(value: Any, source: str) -> int:
    # faster-coco-eval indexes images by integer id and would silently int() a numeric string.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(
            f"{source}: image id {value!r} is a {type(value).__name__}; COCO evaluation needs integer image ids"
        )
    return int(value)


def _class_names(gt_data: dict, category_ids: list[int], class_names: list[str] | None) -> list[str]:
    if class_names is None:
        by_id = {cat["id"]: cat["name"] for cat in gt_data["categories"]}
        return [by_id[i] for i in category_ids]
    if len(class_names) != len(category_ids):
        raise InputError(f"{len(class_names)} class names for {len(category_ids)} ground-truth categories")
    return list(class_names)


def _read_json(path: str | Path, source: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise DataError(f"{source}: file not found") from e
    except json.JSONDecodeError as e:
        raise DataError(f"{source}: not valid JSON ({e})") from e


def _name(value: Any, what: str) -> str:
    return f"{what} {value}" if isinstance(value, (str, Path)) else what
