"""Opening what --data names: a data.yaml, a folder holding one, a COCO JSON; splits sharing their images."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from yolonas.data import CocoDataset, data_yaml_of, make_synthetic_dataset, open_dataset, open_splits
from yolonas.errors import DataError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), n_images=4, n_val=2, size=64, seed=0)


def test_data_yaml_of_a_yaml_a_folder_and_a_json(shapes, tmp_path):
    assert data_yaml_of(shapes) == shapes
    assert data_yaml_of(shapes.parent) == shapes
    assert data_yaml_of(tmp_path / "instances.json") is None
    with pytest.raises(DataError, match="needs a data.yaml"):
        data_yaml_of(tmp_path)
    with pytest.raises(DataError, match="not found"):
        data_yaml_of(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(DataError, match="not a data.yaml"):
        data_yaml_of(tmp_path / "notes.txt")


def test_splits_of_a_data_yaml_are_opened_once_each(shapes):
    splits = open_splits(shapes.parent, ("train", "val"))
    assert len(splits["train"]) == 4 and len(splits["val"]) == 2
    assert splits["train"].files == open_dataset(shapes, "train").files
    assert splits["val"].files == open_dataset(shapes.parent, "val").files
    with pytest.raises(DataError, match="no 'test' split"):
        open_splits(shapes, ("train", "test"))


def test_splits_naming_the_same_images_are_one_data_set(shapes, tmp_path):
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump({"path": str(shapes.parent), "train": "train/images", "val": "train/images",
                                    "names": ["a", "b", "c"]}))
    splits = open_splits(same, ("train", "val"))
    assert splits["train"] is splits["val"]
    assert list(open_splits(shapes, ("val", "val"))) == ["val"]


def test_a_coco_json_is_every_split(coco128):
    json_path = coco128 / "annotations" / "instances_train2017.json"
    splits = open_splits(json_path, ("train", "val", "test"), images=coco128 / "images" / "train2017")
    assert isinstance(splits["train"], CocoDataset) and splits["train"] is splits["val"] is splits["test"]
    assert len(splits["val"]) == 128



def test_quiet_reports_nothing(tmp_path, caplog):
    data = make_synthetic_dataset(tmp_path / "bad", n_images=4, n_val=2, size=64, seed=0)
    label = next((data.parent / "train" / "labels").glob("*.txt"))
    label.write_text("not a label line\n")
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        open_splits(data, ("train",), quiet=True)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        open_splits(data, ("train",))
    assert len(caplog.records) == 1
