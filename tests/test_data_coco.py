"""COCO JSON data sets: counts on coco128, agreement with its YOLO labels, to_coco, faults, id rules."""

from __future__ import annotations

import json
import logging
import warnings

import numpy as np
import pytest
from faster_coco_eval import COCO, COCOeval_faster

from yolonas.data import CocoDataset, load_data_yaml, open_dataset
from yolonas.data.checks import (
    BAD_CLASS,
    DEGENERATE,
    MISSING_IMAGE,
    OUTSIDE,
    SIZE_MISMATCH,
    UNKNOWN_IMAGE,
    UNPARSABLE,
)
from yolonas.errors import DataError


@pytest.fixture(scope="module")
def coco_json(coco128):
    return coco128 / "annotations" / "instances_train2017.json"


@pytest.fixture(scope="module")
def coco(coco_json):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return CocoDataset(coco_json)  # the images folder is found: ../images/train2017


def test_coco128_json_counts(coco, coco128):
    assert len(coco) == 128 and coco.root == coco128 / "images" / "train2017"
    crowd = np.concatenate([coco.labels(i)[2] for i in range(len(coco))])
    assert len(crowd) == 939 and crowd.sum() == 10
    assert len(coco.category_ids) == 80 and coco.category_ids[0] == 1 and coco.category_ids[-1] == 90
    assert coco.class_names[0] == "person" and coco.class_names[-1] == "toothbrush"
    assert coco.report.counts == {}
    k = coco.files.index("000000000009.jpg")
    assert coco.image_ids[k] == 9 and tuple(coco.sizes[k]) == (480, 640)
    s = coco[k]
    assert s.image.shape == (480, 640, 3) and s.image_id == 9 and s.classes.dtype == np.int64


def test_compact_storage(coco):
    # labels live in flat numpy arrays sliced per image, not as per-annotation Python objects
    assert all(not (isinstance(v, list) and v and isinstance(v[0], dict)) for v in vars(coco).values())
    assert coco._boxes.shape == (939, 4) and coco.offsets.shape == (129,)


def test_non_crowd_boxes_match_yolo_labels(coco, coco128):
    yolo = load_data_yaml(coco128 / "data.yaml", "train")
    assert yolo.class_names == coco.class_names
    by_file = {f: i for i, f in enumerate(yolo.files)}
    for i, f in enumerate(coco.files):
        boxes, classes, crowd = coco.labels(i)
        yboxes, yclasses, _ = yolo.labels(by_file[f])
        a = np.concatenate([classes[~crowd, None], boxes[~crowd]], 1)
        b = np.concatenate([yclasses[:, None], yboxes], 1)
        assert len(a) == len(b), f
        if len(a):
            gap = np.abs(a[:, None] - b[None]).max(-1)  # every box has its twin in the other set
            assert gap.min(1).max() < 1e-3 and gap.min(0).max() < 1e-3, f


def test_to_coco_round_trip_and_evaluates(coco, coco_json):
    source = json.loads(coco_json.read_text())
    gt = coco.to_coco()
    assert [im["id"] for im in gt["images"]] == [im["id"] for im in source["images"]]
    assert [c["id"] for c in gt["categories"]] == sorted(c["id"] for c in source["categories"])
    key = lambda a: (a["image_id"], a["category_id"], a["iscrowd"], *np.round(a["bbox"], 2), a["area"])
    assert sorted(map(key, gt["annotations"])) == sorted(map(key, source["annotations"]))
    # the ground truth scored against itself is perfect under faster-coco-eval
    cocogt = COCO(gt)
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if not a["iscrowd"]]
    ev = COCOeval_faster(cocogt, cocogt.loadRes(dets), "bbox", print_function=lambda *a: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_faults_are_reported_once_and_skipped(coco_json, coco128, tmp_path, caplog):
    source = json.loads(coco_json.read_text())
    images = [im for im in source["images"] if im["file_name"] in ("000000000009.jpg", "000000000025.jpg")]
    w = images[0]["width"]
    anns = [
        {"id": 1, "image_id": images[0]["id"], "category_id": 1, "bbox": [10, 10, 50, 40], "iscrowd": 0},
        {"id": 2, "image_id": images[0]["id"], "category_id": 1, "bbox": [w - 20, 10, 50, 40]},  # clipped
        {"id": 3, "image_id": images[0]["id"], "category_id": 1, "bbox": [10, 10, 0, 40]},  # zero width
        {"id": 4, "image_id": images[0]["id"], "category_id": 999, "bbox": [10, 10, 5, 5]},  # unknown category
        {"id": 5, "image_id": 123456789, "category_id": 1, "bbox": [10, 10, 5, 5]},  # unknown image
        {"id": 6, "image_id": images[0]["id"], "category_id": 1, "bbox": [10, 10, 5]},  # malformed bbox
        {"id": 7, "image_id": images[1]["id"], "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 1},
        {"id": 8, "image_id": 77, "category_id": 1, "bbox": [1, 2, 3, 4]},  # image whose file is missing
    ]
    missing = {"id": 77, "file_name": "gone.jpg", "width": 100, "height": 100}
    data = {"images": [*images, missing], "annotations": anns, "categories": source["categories"]}
    path = write_json(tmp_path / "faulty.json", data)
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        ds = CocoDataset(path, coco128 / "images" / "train2017")
    assert len(caplog.records) == 1
    for fault in (OUTSIDE, DEGENERATE, BAD_CLASS, UNKNOWN_IMAGE, UNPARSABLE, MISSING_IMAGE):
        assert ds.report.count(fault) == 1, fault
    assert len(ds) == 2 and ds.files == ["000000000009.jpg", "000000000025.jpg"]
    boxes, classes, crowd = ds.labels(0)
    np.testing.assert_allclose(boxes, [[10, 10, 60, 50], [w - 20, 10, w, 50]])
    assert classes.tolist() == [0, 0] and not crowd.any()
    assert ds.labels(1)[2].tolist() == [True]
    assert ds.to_coco()["annotations"][1]["bbox"] == [w - 20, 10, 20, 40]


def test_string_image_ids_are_refused(tmp_path, coco128):
    data = {"images": [{"id": "abc", "file_name": "000000000009.jpg", "width": 640, "height": 480}],
            "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    with pytest.raises(DataError, match="not an integer"):
        CocoDataset(write_json(tmp_path / "s.json", data), coco128 / "images" / "train2017")


def test_check_images_catches_wrong_sizes(tmp_path, coco128, caplog):
    data = {"images": [{"id": 1, "file_name": "000000000009.jpg", "width": 100, "height": 480},
                       {"id": 2, "file_name": "000000000025.jpg"}],  # no size given: read from the header
            "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    path = write_json(tmp_path / "sizes.json", data)
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        ds = CocoDataset(path, coco128 / "images" / "train2017", check_images=True)
    assert "size differs" in caplog.text
    assert ds.report.count(SIZE_MISMATCH) == 1 and ds.files == ["000000000025.jpg"] and ds.sizes[0, 0] > 0


def test_images_folder_not_found_and_dispatch(tmp_path, coco_json):
    data = {"images": [{"id": 1, "file_name": "nowhere.jpg", "width": 10, "height": 10}], "annotations": [],
            "categories": [{"id": 1, "name": "x"}]}
    with pytest.raises(DataError, match="cannot find the images"):
        CocoDataset(write_json(tmp_path / "x.json", data))
    with pytest.raises(DataError, match="not found"):
        CocoDataset(tmp_path / "absent.json")
    assert len(open_dataset(coco_json)) == 128
