"""Learning works end to end: a small spec trained from scratch on 8 coco128 images fits them (AP50 >= 0.8);
and our COCO numbers equal pycocotools' on that trained model's detections over coco128's real JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import fit_first_coco_images
from yolonas.data import CocoDataset
from yolonas.data.yolo import load_data_yaml
from yolonas.eval.coco import coco_metrics
from yolonas.eval.validate import validate
from yolonas.weights import load


@pytest.fixture(scope="module")
def trained(coco128, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("learn")
    result, data, _ = fit_first_coco_images(coco128, tmp_path)
    return result, data, tmp_path


def test_tiny_model_learns_eight_coco_images(trained):
    result, data, _ = trained
    assert result.metrics["AP50"] >= 0.8, result.metrics
    # The saved best.pt, loaded on its own, scores the same through the public validate().
    metrics = validate(load(result.best), load_data_yaml(data, "val"), batch_size=8)
    assert metrics.AP50 >= 0.8 and abs(metrics.AP50 - result.metrics["AP50"]) < 1e-6
    assert metrics.num_images == 8


def test_coco_numbers_equal_pycocotools_on_trained_detections(trained, coco128):
    pycocotools = pytest.importorskip("pycocotools.cocoeval")
    from pycocotools.coco import COCO  # noqa: PLC0415 - optional test dependency

    result, _, tmp_path = trained
    gt_file = coco128 / "annotations" / "instances_train2017.json"
    preds_file = tmp_path / "preds.json"
    ours = validate(load(result.best), CocoDataset(gt_file, coco128 / "images" / "train2017"), batch_size=8,
                    save_predictions=preds_file)
    preds = json.loads(preds_file.read_text())
    assert len(preds) > 1000 and {"file_name", "image_id", "category_id", "bbox", "score"} <= set(preds[0])
    assert ours.AP50 > 0.01  # real detections: the model found its 8 training images among the 128

    gt = COCO(str(gt_file))
    dt = gt.loadRes([{k: p[k] for k in ("image_id", "category_id", "bbox", "score")} for p in preds])
    ev = pycocotools.COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    np.testing.assert_allclose(ours.stats, np.maximum(ev.stats, 0), atol=1e-4)  # we report -1 (undefined) as 0
    assert coco_metrics(gt_file, preds_file).stats == ours.stats
