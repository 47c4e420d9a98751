"""YOLO txt data sets and data.yaml: counts on real data, label checks, to_coco, the generated set."""

from __future__ import annotations

import logging
import shutil
import warnings

import cv2
import numpy as np
import pytest
import yaml

from yolonas.data import YoloDataset, load_data_yaml, make_synthetic_dataset, open_dataset, read_data_yaml
from yolonas.data.checks import (
    BAD_CLASS,
    CORRUPT_IMAGE,
    DEGENERATE,
    MISSING_IMAGE,
    NO_LABEL_FILE,
    OUTSIDE,
    UNPARSABLE,
)
from yolonas.data.synthetic import draw_shape
from yolonas.errors import DataError


def test_coco128_opens_with_readme_counts(coco128):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two background images are counted, not warned about
        ds = load_data_yaml(coco128 / "data.yaml", "train")
    assert len(ds) == 128
    assert len(ds.class_names) == 80 and ds.class_names[0] == "person" and ds.class_names[79] == "toothbrush"
    assert sum(len(ds.labels(i)[0]) for i in range(len(ds))) == 929
    assert ds.report.counts == {NO_LABEL_FILE: 2}
    assert sorted(ds.report.found[NO_LABEL_FILE]) == ["000000000250.jpg", "000000000508.jpg"]
    assert ds.category_ids == list(range(1, 81))


def test_sample_types_and_labels_agree(coco128):
    ds = load_data_yaml(coco128 / "data.yaml", "val")
    sample = ds[0]
    assert sample.image.dtype == np.uint8 and sample.image.ndim == 3 and sample.image.shape[2] == 3
    assert sample.boxes.dtype == np.float32 and sample.boxes.shape[1] == 4
    assert sample.classes.dtype == np.int64 and sample.crowd.dtype == bool and not sample.crowd.any()
    assert sample.image.shape[:2] == tuple(ds.sizes[0])
    boxes, classes, _ = ds.labels(0)
    np.testing.assert_array_equal(boxes, sample.boxes)
    np.testing.assert_array_equal(classes, sample.classes)
    assert sample.file.endswith("000000000009.jpg") and isinstance(sample.image_id, int)
    # 000000000009.txt line 1: "45 0.479492 0.688771 0.955609 0.5955" on a 640x480 image
    np.testing.assert_allclose(boxes[0], [(0.479492 - 0.955609 / 2) * 640, (0.688771 - 0.5955 / 2) * 480,
                                          (0.479492 + 0.955609 / 2) * 640, (0.688771 + 0.5955 / 2) * 480], atol=1e-3)
    # RGB, not BGR: compare with OpenCV's own decode
    np.testing.assert_array_equal(sample.image, cv2.imread(sample.file)[..., ::-1])


def test_to_coco_round_trip(coco128):
    ds = load_data_yaml(coco128 / "data.yaml", "train")
    gt = ds.to_coco()
    assert len(gt["images"]) == 128 and len(gt["annotations"]) == 929 and len(gt["categories"]) == 80
    assert all(isinstance(im["id"], int) for im in gt["images"])
    assert len({a["id"] for a in gt["annotations"]}) == 929 and min(a["id"] for a in gt["annotations"]) >= 1
    by_id = {int(i): k for k, i in enumerate(ds.image_ids)}
    for im in gt["images"][:5]:
        assert (im["height"], im["width"]) == tuple(ds.sizes[by_id[im["id"]]])
    for a in gt["annotations"][:50]:
        i = by_id[a["image_id"]]
        boxes, classes, _ = ds.labels(i)
        x, y, w, h = a["bbox"]
        k = np.argmin(np.abs(boxes - [x, y, x + w, y + h]).sum(1))
        np.testing.assert_allclose(boxes[k], [x, y, x + w, y + h], atol=1e-3)
        assert a["category_id"] == classes[k] + 1 and a["iscrowd"] == 0
        assert a["area"] == pytest.approx(w * h, rel=1e-4)


def test_aquarium_test_split_reports_two_zero_size_boxes(aquarium, caplog):
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        ds = load_data_yaml(aquarium / "data.yaml", "test")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # one summary block
    assert "degenerate box" in caplog.records[0].getMessage()
    assert len(ds) == 63 and sum(len(ds.labels(i)[0]) for i in range(len(ds))) == 584 - 2
    assert ds.report.counts == {DEGENERATE: 2}
    assert sorted(ds.report.found[DEGENERATE]) == [
        "IMG_2423_jpeg_jpg.rf.1c0901882e71d5ebd26f036f4e22da65.txt:17",
        "IMG_2570_jpeg_jpg.rf.ed40900b657a5b23d92cb2d296ad2dbc.txt:15"]
    assert ds.class_names == ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]


def test_roboflow_yaml_paths_one_level_up(aquarium):
    # the export's own yaml says val: ../valid/images, relative to a folder one level up
    ds = load_data_yaml(aquarium / "data.roboflow.yaml", "val")
    assert len(ds) == 127 and sum(len(ds.labels(i)[0]) for i in range(len(ds))) == 909
    with pytest.raises(DataError, match="train"):
        load_data_yaml(aquarium / "data.roboflow.yaml", "train")  # ../train is not shipped


def write_jpg(path, h=100, w=200):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 90, np.uint8))


def test_faulty_dataset_opens_reports_each_fault_once(tmp_path, caplog):
    images, labels = tmp_path / "images", tmp_path / "labels"
    for name in ("a", "b", "c"):
        write_jpg(images / f"{name}.jpg")
    (images / "broken.jpg").write_bytes(b"this is not a jpeg at all")
    labels.mkdir()
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n"
                                  "1 0.5 0.5 nope 0.2\n"  # does not parse
                                  "7 0.5 0.5 0.2 0.2\n"  # class outside 0..1
                                  "1 0.95 0.5 0.3 0.2\n")  # reaches out on the right: clipped
    (labels / "b.txt").write_text("1 0.25 0.25 0.5 0.5\n\n1 0.6 0.6 0.0 0.1\n")  # blank line, zero-width box
    (labels / "broken.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # c has no label file
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        ds = YoloDataset(images, ["cat", "dog"])
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    for fault in (UNPARSABLE, BAD_CLASS, OUTSIDE, DEGENERATE, CORRUPT_IMAGE, NO_LABEL_FILE):
        assert fault in message
        assert ds.report.count(fault) == 1, fault
    assert ds.report.found[UNPARSABLE] == ["a.txt:2"] and ds.report.found[BAD_CLASS] == ["a.txt:3"]
    assert ds.report.found[OUTSIDE] == ["a.txt:4"] and ds.report.found[DEGENERATE] == ["b.txt:3"]
    assert ds.report.found[CORRUPT_IMAGE] == [str(images / "broken.jpg")]
    assert [f for f in ds.files] == ["a.jpg", "b.jpg", "c.jpg"]
    a, b, c = ds[0], ds[1], ds[2]
    np.testing.assert_allclose(a.boxes, [[80, 40, 120, 60], [160, 40, 200, 60]], atol=1e-4)
    np.testing.assert_array_equal(a.classes, [0, 1])
    np.testing.assert_allclose(b.boxes, [[0, 0, 100, 50]], atol=1e-4)
    assert len(c.boxes) == 0 and c.image.shape == (100, 200, 3)


def test_list_of_images_missing_file_and_polygon_line(tmp_path, caplog):
    write_jpg(tmp_path / "images" / "a.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.6\n")  # a segment: its enclosing box
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        ds = YoloDataset([tmp_path / "images" / "a.jpg", tmp_path / "images" / "gone.jpg"], ["x", "y"])
    assert "missing image" in caplog.text
    assert len(ds) == 1 and ds.report.count(MISSING_IMAGE) == 1
    np.testing.assert_allclose(ds[0].boxes, [[20, 20, 100, 60]], atol=1e-4)


def test_data_yaml_variants_and_errors(tmp_path):
    for name in ("a", "b"):
        write_jpg(tmp_path / "d" / "one" / "images" / f"{name}.jpg")
        write_jpg(tmp_path / "d" / "two" / "images" / f"{name}.jpg")
    (tmp_path / "d" / "list.txt").write_text("one/images/a.jpg\ntwo/images/b.jpg\n")
    spec = {"path": "d", "train": ["one/images", "two/images"], "val": "list.txt", "names": {0: "x", 1: "y"}}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(spec))
    train = load_data_yaml(tmp_path / "data.yaml", "train")
    val = load_data_yaml(tmp_path / "data.yaml", "val")
    assert len(train) == 4 and len(val) == 2 and train.class_names == ["x", "y"]
    assert open_dataset(tmp_path / "data.yaml", "val").files == val.files
    with pytest.raises(DataError, match="no 'test' split"):
        load_data_yaml(tmp_path / "data.yaml", "test")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"train": "d/one/images", "nc": 3, "names": ["x", "y"]}))
    with pytest.raises(DataError, match="nc is 3 but 2 names"):
        read_data_yaml(tmp_path / "bad.yaml")
    with pytest.raises(DataError, match="not found"):
        load_data_yaml(tmp_path / "nope.yaml")


def test_cache_keeps_the_same_images(aquarium, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for p in sorted((aquarium / "valid" / "images").glob("*.jpg"))[:3]:
        shutil.copy(p, folder / p.name)
    plain = YoloDataset(folder, ["fish"] * 7)
    cached = YoloDataset(folder, ["fish"] * 7, cache=True)
    for i in range(3):
        np.testing.assert_array_equal(plain.load_image(i), cached.load_image(i))


def test_synthetic_dataset_boxes_frame_the_shapes(tmp_path):
    data = make_synthetic_dataset(tmp_path / "synth", n_images=6, n_val=2, size=128, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val = load_data_yaml(data, "train"), load_data_yaml(data, "val")
    assert len(train) == 6 and len(val) == 2 and train.class_names == ["circle", "rectangle", "triangle"]
    assert sum(len(train.labels(i)[0]) for i in range(6)) >= 6
    again = make_synthetic_dataset(tmp_path / "again", n_images=6, n_val=2, size=128, seed=3)
    assert (again.parent / "train/labels/train_0000.txt").read_text() == (
        data.parent / "train/labels/train_0000.txt").read_text()
    for cls in range(3):  # each drawn shape fills its box exactly
        canvas = np.zeros((64, 64, 3), np.uint8)
        box = draw_shape(canvas, cls, np.array([10, 12, 41, 50]), (255, 255, 255))
        ys, xs = np.nonzero(canvas[..., 0])
        np.testing.assert_array_equal(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_truncated_jpeg_is_caught_at_open_and_counted(tmp_path, caplog):
    """A JPEG cut short keeps a readable header (PIL's verify passes it): the check must still drop it."""
    images = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("good", "cut"):
        images.mkdir(exist_ok=True)
        cv2.imwrite(str(images / f"{name}.jpg"), rng.integers(0, 255, (200, 300, 3), dtype=np.uint8))
    data = (images / "cut.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(data[: len(data) // 2])
    # a good JPEG with bytes appended after its end marker is still good
    (images / "tail.jpg").write_bytes((images / "good.jpg").read_bytes() + b"\0" * 5000)
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        ds = YoloDataset(images, ["x"])
    assert ds.files == ["good.jpg", "tail.jpg"]
    assert ds.report.found[CORRUPT_IMAGE] == [str(images / "cut.jpg")] and "cut.jpg" in caplog.text
