"""Pseudo-labelling: thresholds and bands, the written data set, ignore regions in the data and in the loss."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from yolonas.arch.head import HeadOutput, make_anchor_points
from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.cli import app
from yolonas.data import load_data_yaml
from yolonas.data.loader import collate
from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.errors import InputError
from yolonas.infer.backend import FunctionBackend
from yolonas.infer.predictor import Predictor
from yolonas.preprocess import Preprocessing
from yolonas.train import PPYoloELoss, mix_data_yaml, pseudo_label
from yolonas.train.loss import ignored_anchors
from yolonas.train.pseudo import class_thresholds

NAMES = ["cat", "dog", "fox"]  # the synthetic set names its classes circle, rectangle, triangle


def _three_boxes(x: torch.Tensor):
    b = x.shape[0]
    boxes = torch.tensor([[4.0, 4, 30, 30], [34, 34, 60, 60], [4, 40, 20, 60]]).expand(b, 3, 4)
    scores = torch.tensor([[0.9, 0.0, 0.0], [0.0, 0.35, 0.0], [0.1, 0.0, 0.0]]).expand(b, 3, 3)
    return boxes, scores


def fixed_teacher() -> FunctionBackend:
    """A backend that 'detects' three boxes on every image: a confident cat, an unsure dog, a faint cat."""
    return FunctionBackend(_three_boxes, ["circle", "rectangle", "triangle"],
                           Preprocessing(image_size=(64, 64), longest_side=None, pad="center", pad_value=114))


def test_class_thresholds_accept_a_number_a_list_or_a_map():
    assert class_thresholds(0.4, NAMES).tolist() == pytest.approx([0.4, 0.4, 0.4])
    assert class_thresholds([0.3, 0.6, 0.5], NAMES).tolist() == pytest.approx([0.3, 0.6, 0.5])
    assert class_thresholds({"dog": 0.7, "default": 0.3}, NAMES).tolist() == pytest.approx([0.3, 0.7, 0.3])
    for bad in ({"horse": 0.5}, [0.5], 1.5):
        with pytest.raises(InputError):
            class_thresholds(bad, NAMES)


def test_pseudo_labels_bands_report_and_dataset(tmp_path: Path):
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=4, n_val=4, size=64, seed=0)
    images = data.parent / "train" / "images"
    out = tmp_path / "pseudo"
    report = pseudo_label(fixed_teacher(), images, out, threshold={"circle": 0.5, "default": 0.5}, ignore_below=0.2)
    assert report.images == 4 and report.images_without_boxes == 0
    assert report.boxes_per_class == {"circle": 4, "rectangle": 0, "triangle": 0}
    assert report.ignored_per_class == {"circle": 0, "rectangle": 4, "triangle": 0}
    assert json.loads((out / "report.json").read_text())["boxes"] == 4
    assert "rectangle" in report.table()

    ds = load_data_yaml(out / "data.yaml", "train")
    boxes, classes, crowd = ds.labels(0)
    assert classes.tolist() == [0, 1] and crowd.tolist() == [False, True]  # the faint cat is background
    # The label is the teacher's detection in original pixels (through the YOLO txt round trip).
    det = Predictor(fixed_teacher()).predict(str(ds.image_file(0)))[0]
    np.testing.assert_allclose(boxes[0], det.boxes[0], atol=0.01)
    # The source folder is untouched: the labels live in the pseudo set, beside links to the images.
    assert not (data.parent / "train" / "ignore").exists()

    # A threshold that promotes the dog turns its ignore region into a label; a rerun replaces the files.
    report = pseudo_label(fixed_teacher(), images, out, threshold=[0.5, 0.3, 0.5], ignore_below=0.2, verbose=False)
    assert report.boxes_per_class == {"circle": 4, "rectangle": 4, "triangle": 0} and not (out / "ignore").exists()

    mixed = mix_data_yaml(data, out, tmp_path / "mixed.yaml")
    assert len(load_data_yaml(mixed, "train")) == len(load_data_yaml(data, "train")) + 4


def test_coco_output_marks_the_band_as_crowd(tmp_path: Path):
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=4, n_val=4, size=64, seed=0)
    report = pseudo_label(fixed_teacher(), data.parent / "train" / "images", tmp_path / "coco", fmt="coco",
                          verbose=False)
    anns = json.loads(Path(report.data).read_text())["annotations"]
    assert sorted((a["category_id"], a["iscrowd"]) for a in anns) == [(1, 0)] * 4 + [(2, 1)] * 4


def test_ignore_band_needs_room_below_the_threshold(tmp_path: Path):
    with pytest.raises(InputError, match="ignore_below"):
        pseudo_label(fixed_teacher(), tmp_path, tmp_path / "out", threshold=0.3, ignore_below=0.4)


def test_collate_hands_crowd_boxes_on_as_ignore_regions():
    from yolonas.data.dataset import Sample  # noqa: PLC0415

    s = Sample(np.zeros((32, 32, 3), np.uint8), np.array([[1, 1, 9, 9], [10, 10, 20, 20]], np.float32),
               np.array([0, 1]), 1, "a.jpg", np.array([False, True]))
    batch = collate([s, s.select(np.array([True, False]))])
    assert batch["targets"].tolist() == [[0, 0, 1, 1, 9, 9], [1, 0, 1, 1, 9, 9]]
    assert batch["ignore"].tolist() == [[0, 10, 10, 20, 20]]


def test_ignore_regions_remove_background_loss_but_keep_positives():
    points, strides = make_anchor_points([(8, 8), (4, 4), (2, 2)], (8, 16, 32))
    n = len(points)
    g = torch.Generator().manual_seed(0)
    out = HeadOutput(torch.randn(1, n, 2, generator=g), torch.randn(1, n, 68, generator=g), points, strides)
    loss = PPYoloELoss(num_classes=2)
    everywhere = torch.tensor([[0.0, 0, 0, 64, 64]])
    assert ignored_anchors(points, everywhere, 1).all()
    no_gt = torch.zeros(0, 6)
    _, plain = loss(out, no_gt)
    _, ignored = loss(out, no_gt, ignore=everywhere)
    assert plain["loss_cls"] > 0 and ignored["loss_cls"] == 0
    half = torch.tensor([[0.0, 0, 0, 32, 64]])
    _, some = loss(out, no_gt, ignore=half)
    assert 0 < some["loss_cls"] < plain["loss_cls"]
    gt = torch.tensor([[0.0, 1, 8, 8, 40, 40]])
    _, with_gt = loss(out, gt, ignore=everywhere)
    assert with_gt["loss_cls"] > 0 and with_gt["loss_iou"] > 0  # the real box's anchors still learn


def test_cli_pseudo_label_writes_the_set(tmp_path: Path):
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=4, n_val=4, size=64, seed=0)
    names = load_data_yaml(data, "train").class_names
    build(yolo_nas_tiny(), class_names=names).save(tmp_path / "t.pt")
    result = CliRunner().invoke(app, ["pseudo-label", "--teacher", str(tmp_path / "t.pt"), "--source",
                                      str(data.parent / "train" / "images"), "--output", str(tmp_path / "p"),
                                      "--conf", "0.4", "--conf", f"{names[0]}=0.6", "--json", "-"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "data.yaml").is_file() and (tmp_path / "p" / "report.json").is_file()
    assert f'"{names[0]}": 0.6' in result.stdout
