"""Predictor end to end on real coco128 images: sources, coordinates, skipped files, video, backends, exports."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.errors import InputError
from yolonas.infer import (
    PREDICT_NMS,
    Detections,
    FunctionBackend,
    ImageSource,
    NMSConfig,
    Predictor,
    TorchBackend,
    VideoSink,
    boxes_to_original,
    draw_detections,
    letterbox_batch,
    postprocess,
    read_image,
)
from yolonas.infer.sources import video_properties
from yolonas.preprocess import Preprocessing

# A randomly initialised head scores every class near its 1% prior, so a low threshold gives real boxes to check.
LOW = NMSConfig(score_threshold=0.005, max_detections=50)
NAMES = ["000000000009.jpg", "000000000025.jpg", "000000000030.jpg"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build(yolo_nas_tiny(), 80, preprocessing=Preprocessing(image_size=(160, 160))).eval()


@pytest.fixture(scope="module")
def images(coco128):
    return [coco128 / "images" / "train2017" / n for n in NAMES]


def test_boxes_are_in_original_pixels(model, images):
    dets = Predictor(model, nms=LOW).predict(images)
    assert [d.path for d in dets] == [str(p) for p in images]
    # The same pipeline by hand, on the same batch (a random head scores all boxes nearly alike, so the
    # last-digit differences between batch sizes would reorder near-ties): letterbox, model, decode, NMS, map back.
    arrays = [read_image(p) for p in images]
    x, infos = letterbox_batch(arrays, model.preprocessing)
    with torch.inference_mode():
        raw = postprocess(*model.decode(model(x)), LOW)
    for det, image, r, info in zip(dets, arrays, raw, infos):
        assert det.image_shape == image.shape[:2] != (160, 160)
        assert len(det) > 0 and det.boxes.dtype == np.float32 and det.class_ids.dtype == np.int64
        h, w = det.image_shape
        assert (det.boxes >= 0).all() and (det.boxes[:, [0, 2]] <= w).all() and (det.boxes[:, [1, 3]] <= h).all()
        assert (det.boxes[:, 2:] >= det.boxes[:, :2]).all()
        np.testing.assert_allclose(det.boxes, boxes_to_original(r[:, :4], info).numpy(), atol=1e-4)
        np.testing.assert_array_equal(det.scores, r[:, 4].numpy())
        assert det.boxes[:, [2, 3]].max() > 160  # really rescaled: the input was only 160 px wide


def test_predict_and_predict_arrays_agree(model, images):
    predictor = Predictor(model, nms=LOW, batch_size=2)
    from_files = predictor.predict(images)
    from_arrays = predictor.predict_arrays([read_image(p) for p in images])
    for a, b in zip(from_files, from_arrays):
        assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
        assert np.array_equal(a.class_ids, b.class_ids)
    # And the model's own convenience method, with a PIL image (batch size 1 on both sides).
    (pil,) = model.predict(Image.open(images[0]), nms=LOW, batch_size=1)
    (alone,) = Predictor(model, nms=LOW, batch_size=1).predict_arrays([read_image(images[0])])
    assert np.array_equal(pil.boxes, alone.boxes) and pil.path == str(images[0])


def test_folder_with_bad_files(model, images, tmp_path, caplog):
    for p in images[:2]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    predictor = Predictor(model, nms=LOW)
    with caplog.at_level(logging.WARNING):
        dets = predictor.predict(tmp_path)
    assert [d.path for d in dets] == [str(tmp_path / p.name) for p in images[:2]]
    assert sorted(name for name, _ in predictor.skipped) == [str(tmp_path / "broken.jpg"), str(tmp_path / "notes.txt")]
    assert "broken.jpg" in caplog.text and "notes.txt" in caplog.text


def test_missing_path_and_empty_glob_raise(tmp_path):
    with pytest.raises(InputError, match="nothing_here.jpg"):
        ImageSource(tmp_path / "nothing_here.jpg")
    with pytest.raises(InputError, match="no files match"):
        ImageSource(str(tmp_path / "*.png"))


def test_glob_list_and_arrays(images):
    pattern = str(images[0].parent / "00000000002*.jpg")
    src = ImageSource([pattern, np.zeros((20, 30, 3), np.uint8), np.zeros((5, 6), np.uint8)])
    items = list(src)
    assert [name for name, _ in items][:1] == [str(images[1])]
    assert [im.shape for _, im in items][-2:] == [(20, 30, 3), (5, 6, 3)]
    assert all(im.dtype == np.uint8 for _, im in items)


def test_video_one_detections_per_frame_and_annotated_copy(model, images, tmp_path):
    frame = cv2.resize(read_image(images[0]), (160, 120))
    src_video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src_video), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (160, 120))
    for i in range(5):
        writer.write(cv2.cvtColor(np.roll(frame, 4 * i, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()

    predictor = Predictor(model, nms=LOW, batch_size=2)
    out_video = tmp_path / "out" / "clip.mp4"
    fps = video_properties(src_video)[0]
    with VideoSink(out_video, fps) as sink:
        names = []
        for name, image, det in predictor.stream(src_video):
            assert det.image_shape == (120, 160) and len(det) > 0
            annotated = draw_detections(image, det)
            assert annotated.shape == image.shape and not np.array_equal(annotated, image)
            sink.write(annotated)
            names.append(name)
    assert names == [f"{src_video}#{i}" for i in range(5)]
    out_fps, w, h, count = video_properties(out_video)
    assert (out_fps, w, h) == (pytest.approx(12.0), 160, 120) and count == 5


def test_any_backend_plugs_in():
    # A stand-in for an ONNX Runtime / OpenVINO session: fixed boxes in input pixels, 2 classes.
    def backend(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        boxes = torch.tensor([[0.0, 16.0, 64.0, 48.0], [10.0, 20.0, 30.0, 40.0]]).expand(b, 2, 4)
        scores = torch.tensor([[0.9, 0.1], [0.2, 0.3]]).expand(b, 2, 2)
        return boxes, scores

    predictor = Predictor(backend, preprocessing=Preprocessing(image_size=(64, 64)), class_names=["cat", "dog"])
    (det,) = predictor.predict_arrays([np.zeros((32, 128, 3), np.uint8)], names=["wide.png"])
    # 128x32 -> scale 0.5, 64x16 centred with 24 px above: the first box is exactly the whole image.
    assert det.boxes[0].tolist() == [0.0, 0.0, 128.0, 32.0] and det.class_ids.tolist() == [0, 1]
    assert det.to_json()["detections"][1]["class_name"] == "dog"


def test_training_mode_is_restored(images):
    model = build(yolo_nas_tiny(), 3, preprocessing=Preprocessing(image_size=(96, 96)))
    assert model.training
    model.predict(images[0])
    assert model.training


def test_thresholds_are_logged(model, caplog):
    with caplog.at_level(logging.INFO, logger="yolonas.infer"):
        Predictor(model)
    assert PREDICT_NMS.describe() in caplog.text and "score>0.25" in caplog.text


def test_detections_exports():
    det = Detections(boxes=np.array([[10.0, 20.0, 40.5, 60.25], [0.0, 0.0, 5.0, 5.0]], np.float32),
                     scores=np.array([0.9, 0.3], np.float32), class_ids=np.array([2, 0]),
                     class_names=["a", "b", "c"], image_shape=(100, 200), path="x.jpg")
    coco = det.to_coco(image_id=7)
    assert coco[0] == {"image_id": 7, "category_id": 3, "bbox": [10.0, 20.0, 30.5, 40.25],
                       "score": pytest.approx(0.9)}
    assert [r["category_id"] for r in det.to_coco(7, category_ids=[5, 6, 9])] == [9, 5]
    js = det.to_json()
    assert (js["file"], js["width"], js["height"]) == ("x.jpg", 200, 100)
    assert js["detections"][0]["class_name"] == "c" and js["detections"][0]["box"] == [10.0, 20.0, 40.5, 60.25]
    try:
        import supervision  # noqa: F401, PLC0415
    except ImportError:
        with pytest.raises(InputError, match="supervision"):
            det.to_supervision()
    else:
        assert len(det.to_supervision()) == 2


def test_compiled_backend_gives_the_eager_detections(model, images):
    # torch.compile (Inductor, C++ on this CPU) reorders float arithmetic, so compare to a tolerance.
    x, _ = letterbox_batch([read_image(p) for p in images[:2]], model.preprocessing, "cpu")
    eager = TorchBackend(model)(x)
    compiled = TorchBackend(model, compile=True)
    for _ in range(2):  # the second call runs the cached compiled code
        boxes, scores = compiled(x)
    torch.testing.assert_close(boxes, eager[0], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(scores, eager[1], rtol=1e-4, atol=1e-5)


def test_cuda_graphs_need_cuda(model):
    with pytest.raises(InputError, match="CUDA graphs need a CUDA device"):
        TorchBackend(model, "cpu", cuda_graphs=True)


def test_bf16_backend_close_to_float32(model, images):
    x, _ = letterbox_batch([read_image(p) for p in images[:2]], model.preprocessing, "cpu")
    boxes, scores = TorchBackend(model)(x)
    low = TorchBackend(model, bf16=True)
    bf_boxes, bf_scores = low(x)
    assert bf_boxes.dtype == bf_scores.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast on the CPU: the weights stay
    assert not torch.equal(bf_scores, scores)  # it really ran in bf16
    # bf16 keeps 8 bits of mantissa: ~0.4% per value, a few tenths of a pixel on boxes of a few hundred.
    torch.testing.assert_close(bf_boxes, boxes, rtol=2e-2, atol=2.0)
    torch.testing.assert_close(bf_scores, scores, rtol=5e-2, atol=1e-3)
    with pytest.raises(InputError, match="exclude each other"):
        TorchBackend(model, half=True, bf16=True)


def test_input_comes_in_the_layout_the_backend_wants(model, images):
    seen = {}

    def nothing(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(x.shape[0], 1, 4), torch.zeros(x.shape[0], 1, 1)

    def plain(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen["plain"] = x
        return nothing(x)

    def channels_last(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen["channels_last"] = x
        return nothing(x)

    arrays = [read_image(p) for p in images]
    pre = Preprocessing(image_size=(96, 128))
    Predictor(plain, preprocessing=pre, class_names=["a"]).predict_arrays(arrays)
    Predictor(FunctionBackend(channels_last, ["a"], pre, memory_format=torch.channels_last)).predict_arrays(arrays)
    assert seen["plain"].is_contiguous() and seen["channels_last"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(seen["plain"], seen["channels_last"])
    assert Predictor(model).backend.memory_format == torch.channels_last  # TorchBackend's default layout
