"""Plots write real PNG files; the confusion matrix gives the expected counts on small hand-made cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from yolonas.errors import DataError, InputError
from yolonas.eval import (
    Metrics,
    coco_metrics,
    confusion_matrix,
    plot_confusion_matrix,
    plot_pr_curves,
    plot_training_curves,
)

PNG = b"\x89PNG\r\n\x1a\n"


def hand_made(gt_boxes: dict[int, list], images: int = 3) -> dict:
    """A COCO ground truth with two categories of ids 3 and 7 (class indices 0 and 1) on 100x100 images."""
    annotations = [
        {"id": i, "image_id": image_id, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": crowd}
        for i, (image_id, cat, box, crowd) in enumerate(
            ((image_id, *entry) for image_id, entries in gt_boxes.items() for entry in entries), start=1
        )
    ]
    return {
        "images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.jpg"} for i in range(1, images + 1)],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def det(image_id: int, category_id: int, box: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


def test_confusion_matrix_hand_made():
    gt = hand_made(
        {
            1: [(3, [0, 0, 10, 10], 0), (7, [50, 50, 20, 20], 0), (3, [80, 0, 10, 10], 0), (3, [0, 60, 30, 30], 1)],
            2: [(7, [10, 10, 30, 30], 0)],
        }
    )
    dets = [
        det(1, 3, [0, 0, 10, 10], 0.9),  # cat on the cat: correct
        det(1, 3, [51, 50, 20, 20], 0.8),  # cat on the dog: confused
        det(1, 7, [30, 30, 5, 5], 0.7),  # dog on nothing: false positive
        det(1, 7, [1, 0, 10, 10], 0.6),  # dog on the cat already taken by a better match: false positive
        det(1, 3, [80, 0, 10, 10], 0.1),  # below the score threshold: the third cat is missed
        det(3, 3, [5, 5, 20, 20], 0.5),  # image 3 has no objects: false positive
    ]  # image 2's dog is missed; the crowd box is left out
    expected = np.array(
        [
            [1, 1, 1],  # predicted cat: true cat, true dog, background
            [0, 0, 2],  # predicted dog
            [1, 1, 0],  # predicted nothing (missed)
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(gt, dets, num_classes=2), expected)
    # Without the score threshold the third cat is found.
    expected[0, 0] += 1
    expected[2, 0] -= 1
    np.testing.assert_array_equal(confusion_matrix(gt, dets, num_classes=2, score_threshold=0.0), expected)


def test_confusion_matrix_matches_greedily_by_iou():
    # IoUs: (a, g1) 0.9, (b, g1) 0.8, (a, g2) 0.7, (b, g2) 0.6. Greedy by IoU keeps a-g1 then b-g2; keeping only
    # each prediction's best ground truth would lose b and g2.
    gt = hand_made({1: [(3, [0, 0, 10, 10], 0), (7, [0, 2, 10, 8], 0)]}, images=1)
    dets = [det(1, 3, [0, 0, 10, 9], 0.9), det(1, 7, [0, 0, 10, 8], 0.9)]
    np.testing.assert_array_equal(confusion_matrix(gt, dets, num_classes=2), np.diag([1, 1, 0]))
    # Above the IoU threshold of the second pair, b is a false positive and g2 is missed.
    expected = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(confusion_matrix(gt, dets, num_classes=2, iou_threshold=0.65), expected)


def test_confusion_matrix_without_predictions():
    gt = hand_made({1: [(3, [0, 0, 10, 10], 0)], 2: [(7, [0, 0, 10, 10], 0)]})
    np.testing.assert_array_equal(confusion_matrix(gt, [], num_classes=2), [[0, 0, 0], [0, 0, 0], [1, 1, 0]])


def _assert_png(path: Path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000


def test_plot_pr_curves(coco128: Path, tmp_path: Path):
    gt = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    rng = np.random.default_rng(0)
    dets = [
        det(
            a["image_id"], a["category_id"], [v + rng.normal(0, 2) for v in a["bbox"][:2]] + a["bbox"][2:], rng.random()
        )
        for a in gt["annotations"]
    ]
    metrics = coco_metrics(gt, dets)
    _assert_png(plot_pr_curves(metrics, tmp_path / "pr" / "pr.png"))
    with pytest.raises(InputError):
        plot_pr_curves(Metrics(), tmp_path / "none.png")


def test_plot_confusion_matrix(tmp_path: Path):
    matrix = np.array([[5, 1, 2], [0, 3, 1], [1, 2, 0]])
    _assert_png(plot_confusion_matrix(matrix, ["cat", "dog"], tmp_path / "cm.png"))
    _assert_png(plot_confusion_matrix(matrix, ["cat", "dog"], tmp_path / "cm_counts.png", normalize=False))
    big = np.random.default_rng(0).integers(0, 9, size=(81, 81))
    _assert_png(plot_confusion_matrix(big, [f"class {i}" for i in range(80)], tmp_path / "cm80.png"))
    with pytest.raises(InputError):
        plot_confusion_matrix(matrix, ["cat"], tmp_path / "bad.png")


def test_plot_training_curves(tmp_path: Path):
    csv_path = tmp_path / "results.csv"
    rows = ["epoch,loss_cls,loss_iou,loss_dfl,AP,AP50,lr"]
    # mAP only every second epoch, as a trainer that validates every N epochs writes it.
    rows += [
        f"{e},{1 / (e + 1)},{0.5 / (e + 1)},0.3,{'' if e % 2 else e / 20},{'' if e % 2 else e / 15},0.01"
        for e in range(8)
    ]
    csv_path.write_text("\n".join(rows) + "\n")
    _assert_png(plot_training_curves(csv_path, tmp_path / "curves.png"))

    no_epoch = tmp_path / "no_epoch.csv"
    no_epoch.write_text("step,loss_cls\n1,0.5\n")
    with pytest.raises(DataError, match="epoch"):
        plot_training_curves(no_epoch, tmp_path / "x.png")
    with pytest.raises(DataError, match="not found"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
