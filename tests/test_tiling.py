"""Tiles: the grid, training tiles of real large images, the merge of tile boxes, tiled Predictor, CLI errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms
from typer.testing import CliRunner

from yolonas.cli import app
from yolonas.data import TiledDataset, open_dataset, tile_grid
from yolonas.errors import InputError
from yolonas.infer import FunctionBackend, Predictor
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.tiling import TileBoxes, TileConfig, absorbed_parts, greedy_keep, merge_tiles
from yolonas.preprocess import Preprocessing

runner = CliRunner()


@pytest.fixture(scope="module")
def aerial(datasets):
    return datasets / "aerial_cars_minsk" / "data.yaml"


@pytest.mark.parametrize("h, w, size, overlap", [(1080, 1920, 640, 0.2), (2250, 4000, 800, 0.25), (500, 700, 320, 0.0),
                                                 (300, 200, 640, 0.2), (640, 1280, 640, 0.5)])
def test_grid_is_sahis(h, w, size, overlap):
    slicing = pytest.importorskip("sahi.slicing")
    want = slicing.get_slice_bboxes(h, w, size, size, False, overlap, overlap)
    assert tile_grid(h, w, size, overlap).tolist() == want


@pytest.mark.parametrize("size, overlap, says", [(100, 0.2, "multiple of 32"), (0, 0.2, "multiple of 32"),
                                                 (-64, 0.2, "multiple of 32"), (640, 1.0, "[0, 1)"),
                                                 (640, -0.1, "[0, 1)")])
def test_bad_tiling_is_one_line(size, overlap, says):
    with pytest.raises(InputError, match=r"tile") as e:
        TileConfig(size, overlap)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_training_tiles_of_real_frames(aerial):
    """Every box of a frame lands in the tiles that see it, clipped; slivers become crowd; empty tiles are sampled."""
    frames = open_dataset(aerial, "train")
    tiles = TiledDataset(frames, 640, 0.2, empty_rate=0.5, seed=3)
    h, w = frames.sizes[0]
    assert len(tile_grid(h, w, 640, 0.2)) == 8  # 1920 x 1080 frames: 4 x 2 tiles
    sample = tiles[0]
    x1, y1, x2, y2 = tiles.windows[0]
    want = frames.load_image(int(tiles.owner[0]))[y1:y2, x1:x2]
    assert sample.image.shape == (640, 640, 3) and np.array_equal(sample.image, want)
    assert (sample.boxes >= 0).all() and (sample.boxes <= 640).all()
    boxes, _, _ = frames.labels(int(tiles.owner[0]))
    inside = (np.minimum(boxes[:, 2], x2) > np.maximum(boxes[:, 0], x1)) & \
             (np.minimum(boxes[:, 3], y2) > np.maximum(boxes[:, 1], y1))
    assert len(sample.boxes) == inside.sum()
    area = (sample.boxes[:, 2:] - sample.boxes[:, :2]).prod(1)
    assert (sample.crowd == (area < 0.25 * (boxes[inside, 2:] - boxes[inside, :2]).prod(1))).all()
    counts = np.diff(tiles.offsets)
    all_tiles = sum(len(tile_grid(h, w, 640, 0.2)) for h, w in frames.sizes)
    empty_kept = int((counts == 0).sum())
    empty_all = all_tiles - int((counts > 0).sum())
    assert empty_kept == round(0.5 * empty_all)
    assert TiledDataset(frames, 640, 0.2, empty_rate=0.5, seed=3).files == tiles.files  # a fixed draw


def _boxes(rows):
    return torch.tensor(rows, dtype=torch.float32)


def _tiles(rows, windows, hw=(1000, 2000)) -> TileBoxes:
    dets = torch.tensor(rows, dtype=torch.float32)
    return TileBoxes(dets, torch.tensor(windows, dtype=torch.float32), torch.full((len(rows),), 2.0), hw)


A, B = [0, 0, 640, 640], [512, 0, 1152, 640]  # two tiles side by side, sharing 128 columns


def test_a_car_cut_by_a_tile_border_is_counted_once():
    """The part of a car that tile A shows (cut at its right border, even with the better score) gives way to the
    whole car that tile B shows; plain NMS at IoU 0.7 would keep both (IoU 0.4)."""
    boxes = _tiles([[600, 100, 640, 150, 0.9, 0], [560, 100, 660, 150, 0.8, 0], [100, 100, 150, 150, 0.7, 0]],
                   [A, B, A])
    assert absorbed_parts(boxes, 0.5).tolist() == [True, False, False]
    assert merge_tiles(boxes, 0.7, TileConfig(640)).tolist() == boxes.dets[[1, 2]].tolist()


def test_no_part_is_absorbed_by_a_box_that_does_not_go_past_its_border():
    """A large box of the same tile (or one that ends at the border too) holds the part, yet saw no more of it."""
    boxes = _tiles([[600, 100, 640, 150, 0.9, 0], [500, 50, 640, 200, 0.3, 0], [600, 100, 640, 150, 0.5, 0]],
                   [A, A, B])
    assert not absorbed_parts(boxes, 0.5).any()


def test_two_halves_of_a_long_car_keep_the_larger():
    """Each tile shows a part cut by its border, each going on past the other's border: the larger part stays."""
    boxes = _tiles([[400, 10, 640, 40, 0.9, 0], [512, 10, 700, 40, 0.8, 0]], [A, B])
    assert absorbed_parts(boxes, 0.5).tolist() == [False, True]


def test_other_classes_and_separate_cars_stay():
    boxes = _tiles([[600, 100, 640, 150, 0.9, 1], [560, 100, 660, 150, 0.8, 0], [20, 0, 30, 10, 0.7, 0]], [A, B, A])
    assert len(merge_tiles(boxes, 0.7, TileConfig(640))) == 3
    assert len(merge_tiles(boxes, 0.7, TileConfig(640), class_agnostic=True)) == 2


def test_greedynmm_grows_the_kept_box_to_the_union():
    """A car longer than the overlap is cut in every tile: greedynmm joins its parts into one whole box."""
    boxes = _tiles([[300, 10, 560, 40, 0.6, 0], [480, 10, 620, 40, 0.75, 0]], [A, B])
    out = merge_tiles(boxes, 0.7, TileConfig(320, merge="greedynmm"))
    assert out.tolist() == [[300, 10, 620, 40, 0.75, 0]]


def test_uncut_boxes_merge_as_nms_does():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200 + 100
    dets = torch.cat([xy, xy + 20 + torch.rand(300, 2, generator=g) * 30, torch.rand(300, 1, generator=g),
                      torch.randint(0, 3, (300, 1), generator=g).float()], dim=1)
    boxes = TileBoxes(dets, torch.tensor([[0.0, 0, 1000, 1000]]).expand(300, 4), torch.full((300,), 2.0), (800, 900))
    out = merge_tiles(boxes, 0.5, TileConfig(640))
    keep = batched_nms(dets[:, :4], dets[:, 4], dets[:, 5].long(), 0.5)
    assert out.tolist() == dets[keep].tolist()


def test_greedy_keep_follows_chains():
    """a suppresses b, b would suppress c: greedy keeps a and c (one round of Fast NMS would drop c too)."""
    match = torch.tensor([[False, True, False], [False, False, True], [False, False, False]])
    assert greedy_keep(match).tolist() == [True, False, True]


def _white_box(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, scores = torch.zeros(len(x), 1, 4), torch.zeros(len(x), 1, 1)
    for i, white in enumerate(x[:, 0] > 0.99):
        ys, xs = torch.nonzero(white, as_tuple=True)
        if len(xs):
            boxes[i, 0] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            scores[i, 0, 0] = 0.9
    return boxes, scores


def white_boxes() -> FunctionBackend:
    """A stub detector: one box around the white pixels of each input, score 0.9 (none where there are none)."""
    return FunctionBackend(_white_box, ["white"], Preprocessing(image_size=(320, 320)))


def _scene(rects: list[tuple[int, int, int, int]], h: int = 600, w: int = 1000) -> np.ndarray:
    image = np.full((h, w, 3), 60, np.uint8)
    for x1, y1, x2, y2 in rects:
        image[y1:y2, x1:x2] = 255
    return image


@pytest.mark.parametrize("merge", ["nms", "greedynmm"])
def test_tiled_predictor_finds_each_object_once_in_image_pixels(merge):
    """Boxes come back in original pixels; one object per box although several tiles see (parts of) it."""
    image = _scene([(600, 100, 700, 150), (20, 400, 60, 440)])
    predictor = Predictor(white_boxes(), nms=NMSConfig(score_threshold=0.5), tiles=TileConfig(320, 0.25, merge=merge))
    det = predictor.predict_arrays([image])[0]
    assert sorted(det.boxes.tolist()) == [[20, 400, 60, 440], [600, 100, 700, 150]]
    # A tile at the original scale sees each object once; the stub sees only one white region per tile here.
    assert predictor.predict_arrays([image, image[:300, :400].copy()])[1].boxes.tolist() == []


def test_an_object_longer_than_the_overlap_is_one_box_with_greedynmm():
    image = _scene([(300, 10, 620, 40)])
    predictor = Predictor(white_boxes(), nms=NMSConfig(score_threshold=0.5),
                          tiles=TileConfig(320, 0.25, merge="greedynmm"))
    assert predictor.predict_arrays([image])[0].boxes.tolist() == [[300, 10, 620, 40]]


def test_an_image_no_larger_than_a_tile_runs_whole_said_once(caplog):
    image = _scene([(10, 10, 50, 50)], 200, 300)
    plain = Predictor(white_boxes(), nms=NMSConfig(score_threshold=0.5)).predict_arrays([image])[0]
    tiled = Predictor(white_boxes(), nms=NMSConfig(score_threshold=0.5), tiles=TileConfig(640))
    with caplog.at_level(logging.WARNING):
        got = tiled.predict_arrays([image, image])
    assert [d.boxes.tolist() for d in got] == [plain.boxes.tolist()] * 2
    notes = [r.message for r in caplog.records if "run whole" in r.message]
    assert len(notes) == 1 and "300x200" in notes[0]


def test_sahi_with_our_adapter_finds_the_same_boxes():
    """SAHI's slicing and merging around our model (through the adapter) agree with our own tiled Predictor."""
    predict = pytest.importorskip("sahi.predict")
    from yolonas.deploy.sahi_model import YoloNasSahiModel  # noqa: PLC0415

    image = _scene([(600, 100, 700, 150), (20, 400, 60, 440), (300, 10, 620, 40)])
    model = YoloNasSahiModel(model=white_boxes(), confidence_threshold=0.5, device="cpu")
    result = predict.get_sliced_prediction(image, model, 320, 320, 0.25, 0.25, perform_standard_pred=False,
                                           postprocess_type="GREEDYNMM", postprocess_match_metric="IOS",
                                           postprocess_match_threshold=0.5, verbose=0)
    theirs = sorted(p.bbox.to_xyxy() for p in result.object_prediction_list)
    ours = Predictor(white_boxes(), nms=NMSConfig(score_threshold=0.5),
                     tiles=TileConfig(320, 0.25, merge="greedynmm")).predict_arrays([image])[0]
    assert sorted(ours.boxes.tolist()) == [[float(v) for v in box] for box in theirs]


@pytest.mark.parametrize("args, says", [(["--tile", "100"], "multiple of 32"),
                                        (["--tile", "640", "--overlap", "1.5"], "[0, 1)"),
                                        (["--overlap", "0.3"], "need --tile")])
def test_cli_tile_errors(tmp_path, args, says):
    result = runner.invoke(app, ["predict", "-m", "yolo_nas_tiny", "-s", str(tmp_path), *args])
    assert result.exit_code != 0 and says in str(result.exception)


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory):
    """yolo_nas_tiny trained 1 epoch on 128 px tiles of generated 256 px images, validated tiled."""
    from yolonas.data.synthetic import make_synthetic_dataset  # noqa: PLC0415
    from yolonas.train import Trainer, apply_overrides, load_recipe  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("tiled")
    data = make_synthetic_dataset(folder / "shapes", n_images=8, n_val=4, size=256, seed=2)
    cfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data": str(data), "project": str(folder / "runs"), "imgsz": 128, "batch": 4, "epochs": 1,
        "run.verbose": False, "data.tile": 128, "data.tile_overlap": 0.25, "data.tile_empty": 1.0})
    trainer = Trainer(cfg)
    result = trainer.fit()
    return trainer, result, data


def test_training_on_tiles_validates_tiled(tiled_run):
    trainer, result, _ = tiled_run
    assert isinstance(trainer.train_data, TiledDataset) and trainer.tiles == TileConfig(128, 0.25)
    # 256 px images (square or 3:4) at tile 128, overlap 32: 3 x 3 or 3 x 2 tiles each, every one kept (rate 1)
    assert len(trainer.train_data) == sum(len(tile_grid(h, w, 128, 0.25)) for h, w in trainer.train_data.base.sizes)
    assert "AP" in result.metrics


def test_val_tile_scores_through_the_same_evaluator(tiled_run, tmp_path, monkeypatch):
    import json  # noqa: PLC0415

    _, result, data = tiled_run
    monkeypatch.chdir(tmp_path)
    plain = runner.invoke(app, ["val", "-w", str(result.best), "-d", str(data), "--no-plots", "--json", "-"])
    tiled = runner.invoke(app, ["val", "-w", str(result.best), "-d", str(data), "--no-plots", "--json", "-",
                                "--tile", "128", "--overlap", "0.25"])
    assert plain.exit_code == 0 and tiled.exit_code == 0, tiled.output
    a, b = json.loads(plain.stdout), json.loads(tiled.stdout)
    assert a.keys() == b.keys() and a["AP"] != b["AP"]
