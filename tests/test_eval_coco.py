"""COCO metrics through faster-coco-eval against pycocotools, on coco128's real annotation file.

No trained model exists yet, so the detections here are built from the ground truth: boxes jittered in
position and size, some dropped, duplicates and false positives (random boxes, random classes) added, with
random scores, from a fixed seed. A later test repeats the comparison with a trained model's detections.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.console import Console

from yolonas.errors import DataError, InputError
from yolonas.eval import Metrics, coco_metrics, confusion_matrix
from yolonas.eval.coco import STAT_NAMES


@pytest.fixture(scope="module")
def gt_path(coco128: Path) -> Path:
    return coco128 / "annotations" / "instances_train2017.json"


@pytest.fixture(scope="module")
def gt(gt_path: Path) -> dict:
    return json.loads(gt_path.read_text())


def fake_detections(gt: dict, seed: int = 0) -> list[dict]:
    """Realistic COCO results from the ground truth: jittered, dropped, duplicated, plus false positives."""
    rng = np.random.default_rng(seed)
    images = {image["id"]: image for image in gt["images"]}
    category_ids = [cat["id"] for cat in gt["categories"]]
    dets = []
    for ann in gt["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate
            cx, cy = x + w / 2 + rng.normal(0, 0.1) * w, y + h / 2 + rng.normal(0, 0.1) * h
            w2, h2 = w * np.exp(rng.normal(0, 0.15)), h * np.exp(rng.normal(0, 0.15))
            dets.append(
                {
                    "bbox": [cx - w2 / 2, cy - h2 / 2, w2, h2],
                    "category_id": ann["category_id"],
                    "image_id": ann["image_id"],
                }
            )
    for image in gt["images"]:
        for _ in range(rng.integers(0, 6)):
            w, h = rng.uniform(5, image["width"] / 2), rng.uniform(5, image["height"] / 2)
            x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
            category_id = int(rng.choice(category_ids))
            dets.append({"image_id": image["id"], "category_id": category_id, "bbox": [x, y, w, h]})
    for det in dets:
        det["bbox"] = [round(float(v), 2) for v in det["bbox"]]
        det["score"] = round(float(rng.random()), 4)
        det["file_name"] = images[det["image_id"]]["file_name"]  # the extra key `val --save-predictions` writes
    return dets


def pycocotools_eval(gt_path: Path, dets: list[dict]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.fixture(scope="module")
def dets(gt: dict) -> list[dict]:
    return fake_detections(gt)


@pytest.fixture(scope="module")
def reference(gt_path: Path, dets: list[dict]) -> COCOeval:
    return pycocotools_eval(gt_path, dets)


def test_summary_equals_pycocotools(gt: dict, dets: list[dict], reference: COCOeval):
    original = copy.deepcopy(dets)
    metrics = coco_metrics(gt, dets)
    assert dets == original  # the caller's detections are not touched
    assert 0.2 < metrics.AP < 0.8  # a realistic, non-trivial case
    assert len(metrics.stats) == 12
    np.testing.assert_allclose(metrics.stats, reference.stats[:12], atol=1e-4, rtol=0)
    assert [getattr(metrics, name) for name in STAT_NAMES] == metrics.stats
    assert metrics.num_images == 128
    assert metrics.num_detections == len(dets)


def test_per_class_equals_pycocotools(gt: dict, dets: list[dict], reference: COCOeval):
    metrics = coco_metrics(gt, dets)
    names = {cat["id"]: cat["name"] for cat in gt["categories"]}
    with_gt = {ann["category_id"] for ann in gt["annotations"]}
    assert set(metrics.per_class) == {names[i] for i in with_gt}
    ref_precision = reference.eval["precision"]
    for k, category_id in enumerate(reference.params.catIds):
        if category_id not in with_gt:
            continue
        p = ref_precision[:, :, k, 0, -1]
        assert metrics.per_class[names[category_id]] == pytest.approx(p[p > -1].mean(), abs=1e-4)
        assert metrics.per_class_AP50[names[category_id]] == pytest.approx(p[0][p[0] > -1].mean(), abs=1e-4)
    assert metrics.precision.shape == ref_precision.shape


def test_files_give_the_same_numbers(gt_path: Path, gt: dict, dets: list[dict], tmp_path: Path):
    pred_path = tmp_path / "preds.json"
    pred_path.write_text(json.dumps(dets))
    assert coco_metrics(gt_path, pred_path).stats == coco_metrics(gt, dets).stats


def test_per_class_names_line_up(gt: dict):
    # Exact boxes for dogs only: dog gets AP 1, every other class with ground truth 0.
    dog = next(cat["id"] for cat in gt["categories"] if cat["name"] == "dog")
    dogs = [
        {"image_id": a["image_id"], "category_id": dog, "bbox": a["bbox"], "score": 0.9}
        for a in gt["annotations"]
        if a["category_id"] == dog and not a["iscrowd"]
    ]
    metrics = coco_metrics(gt, dogs)
    assert metrics.per_class["dog"] == pytest.approx(1.0)
    assert all(ap == 0.0 for name, ap in metrics.per_class.items() if name != "dog")

    upper = [cat["name"].upper() for cat in sorted(gt["categories"], key=lambda c: c["id"])]
    renamed = coco_metrics(gt, dogs, class_names=upper)
    assert renamed.per_class["DOG"] == pytest.approx(1.0)
    assert renamed.class_names == upper
    with pytest.raises(InputError):
        coco_metrics(gt, dogs, class_names=upper[:-1])


def test_empty_predictions_give_zeros(gt: dict):
    metrics = coco_metrics(gt, [])
    assert metrics.stats == [0.0] * 12
    assert metrics.num_detections == 0
    assert metrics.per_class and set(metrics.per_class.values()) == {0.0}


def test_string_image_id_raises(gt: dict, dets: list[dict], tmp_path: Path):
    bad = copy.deepcopy(dets[:5])
    bad[2]["image_id"] = str(bad[2]["image_id"])
    with pytest.raises(DataError, match="integer image ids"):
        coco_metrics(gt, bad)

    bad_gt = copy.deepcopy(gt)
    bad_gt["images"][0]["id"] = "000000000009"
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(bad_gt))
    with pytest.raises(DataError, match=f"{path}.*integer image ids"):
        coco_metrics(path, [])


def test_bad_predictions_raise(gt: dict, dets: list[dict]):
    with pytest.raises(DataError, match="not in the ground truth"):
        coco_metrics(gt, [{**dets[0], "image_id": 999_999_999}])
    with pytest.raises(DataError, match="category id 0"):
        coco_metrics(gt, [{**dets[0], "category_id": 0}])  # a class index where the data set's id belongs
    with pytest.raises(DataError, match="malformed"):
        coco_metrics(gt, [{k: v for k, v in dets[0].items() if k != "score"}])


def test_to_dict_json_and_table(gt: dict, dets: list[dict]):
    metrics = coco_metrics(gt, dets)
    data = json.loads(metrics.to_json())
    assert data["AP"] == metrics.AP and data["per_class"] == metrics.per_class
    assert "precision" not in data
    assert Metrics(**data).stats == metrics.stats

    console = Console(record=True, width=120)
    console.print(metrics.table())
    text = console.export_text()
    assert "person" in text and f"{metrics.AP:.3f}" in text and f"AR100 {metrics.AR100:.3f}" in text


def test_confusion_matrix_counts_every_box_once(gt: dict, dets: list[dict]):
    # Every non-crowd ground-truth box is matched or missed once; every kept prediction is matched or a false positive.
    cm = confusion_matrix(gt, dets, num_classes=80, score_threshold=0.3)
    category_ids = sorted(cat["id"] for cat in gt["categories"])
    gt_per_class = np.bincount(
        [category_ids.index(a["category_id"]) for a in gt["annotations"] if not a["iscrowd"]], minlength=80
    )
    kept_per_class = np.bincount(
        [category_ids.index(d["category_id"]) for d in dets if d["score"] >= 0.3], minlength=80
    )
    assert cm.shape == (81, 81)
    np.testing.assert_array_equal(cm[:, :80].sum(axis=0), gt_per_class)
    np.testing.assert_array_equal(cm[:80, :].sum(axis=1), kept_per_class)
    assert cm[80, 80] == 0
    assert np.trace(cm[:80, :80]) > 0.5 * gt_per_class.sum()  # jittered boxes mostly match their own class
    with pytest.raises(InputError):
        confusion_matrix(gt, dets, num_classes=79)
