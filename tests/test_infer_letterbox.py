"""Letterboxing: placement, padding, the batched tensor, and the way back to original pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from yolonas.data.dataset import Sample
from yolonas.data.transforms import LetterboxResize
from yolonas.data.transforms import letterbox as training_letterbox
from yolonas.errors import InputError
from yolonas.infer.letterbox import (
    LetterboxInfo,
    _resize_into,
    batch_boxes_to_original,
    boxes_to_original,
    letterbox,
    letterbox_batch,
)
from yolonas.infer.sources import read_image
from yolonas.preprocess import COCO_PREPROCESSING, Preprocessing


def _image_with_box(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """A dark image with a white rectangle covering pixels x1..x2-1, y1..y2-1 (continuous box x1, y1, x2, y2)."""
    image = np.full((h, w, 3), 20, np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def _found_box(image: np.ndarray) -> list[float]:
    """The continuous box of the bright pixels (edge pixels count when more than half bright)."""
    ys, xs = np.nonzero(image[:, :, 0] > (255 + 20) / 2)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("pad", ["center", "bottom_right"])
@pytest.mark.parametrize("hw, box", [
    ((240, 300), (40, 30, 200, 170)),  # landscape, scaled up a little
    ((300, 200), (10, 50, 150, 290)),  # portrait
    ((90, 60), (5, 20, 50, 70)),  # small, scaled up 3.6x
    ((700, 420), (100, 123, 333, 650)),  # larger than the input, scaled down
])
def test_drawn_box_round_trip(hw, box, pad):
    h, w = hw
    pre = Preprocessing(image_size=(320, 320), pad=pad)
    padded, info = letterbox(_image_with_box(h, w, box), pre)
    assert padded.shape == (320, 320, 3) and padded.dtype == np.uint8
    assert (info.orig_h, info.orig_w) == (h, w)
    back = boxes_to_original(torch.tensor([_found_box(padded)], dtype=torch.float32), info)[0]
    assert torch.allclose(back, torch.tensor(box, dtype=torch.float32), atol=1.0), (back, box)


@pytest.mark.parametrize("pad", ["center", "bottom_right"])
def test_padding_placement(pad):
    image = np.full((100, 200, 3), 7, np.uint8)  # 2:1 -> 320x160 inside 320x320
    padded, info = letterbox(image, Preprocessing(image_size=(320, 320), pad=pad, pad_value=114))
    assert info.scale == pytest.approx(1.6) and info.pad_x == 0
    content = (padded != 114).any(axis=2)
    rows = np.nonzero(content.any(axis=1))[0]
    assert rows.max() - rows.min() + 1 == 160
    assert rows.min() == (80 if pad == "center" else 0) == info.pad_y
    assert (padded[~content] == 114).all()


def test_deci_636_in_640_odd_pixel_bottom_right(coco128):
    # Deci's COCO evaluation: longest side 636, padded to 640 at the centre; the odd pixel goes bottom/right.
    image = read_image(coco128 / "images" / "train2017" / "000000000009.jpg")  # 480 x 640
    padded, info = letterbox(image, COCO_PREPROCESSING)
    assert info.scale == pytest.approx(636 / 640)
    new_h = round(480 * 636 / 640)  # 477
    assert (info.pad_x, info.pad_y) == (2, (640 - new_h) // 2) == (2, 81)
    content = (padded != 114).any(axis=2)
    rows, cols = np.nonzero(content.any(axis=1))[0], np.nonzero(content.any(axis=0))[0]
    assert (rows.min(), 640 - 1 - rows.max()) == (81, 82)  # 163 rows of padding: 81 above, 82 below
    assert (cols.min(), 640 - 1 - cols.max()) == (2, 2)


def test_longest_side_larger_than_input_is_capped():
    pre = Preprocessing(image_size=(64, 64), longest_side=64)
    padded, info = letterbox(np.zeros((10, 30, 3), np.uint8), pre)
    assert padded.shape == (64, 64, 3) and info.pad_x == 0
    # A longest side beyond a non-square input: the image must fit without distortion.
    pre = Preprocessing(image_size=(64, 128), longest_side=128)
    padded, info = letterbox(np.zeros((100, 100, 3), np.uint8), pre)
    assert (info.new_h, info.new_w) == (64, 64) and info.scale == pytest.approx(0.64)


def test_boxes_map_back_with_the_exact_per_axis_scale():
    pre = Preprocessing(image_size=(640, 640))
    _, info = letterbox(np.zeros((333, 1000, 3), np.uint8), pre)  # 333 * 0.64 = 213.12 -> 213 rows
    box = torch.tensor([[0.0, float(info.pad_y), 640.0, float(info.pad_y + info.new_h)]])
    assert torch.allclose(boxes_to_original(box, info), torch.tensor([[0.0, 0.0, 1000.0, 333.0]]))


def test_batch_matches_single_images():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 80), (120, 60), (96, 96)]]
    pre = Preprocessing(image_size=(96, 128))
    x, infos = letterbox_batch(images, pre, "cpu")
    assert x.shape == (3, 3, 96, 128) and x.dtype == torch.float32 and x.is_contiguous()
    assert 0.0 <= x.min() and x.max() <= 1.0
    for i, image in enumerate(images):
        single, info = letterbox(image, pre)
        assert info == infos[i]
        expected = torch.from_numpy(single).permute(2, 0, 1).float() / 255
        assert torch.allclose(x[i], expected)


def test_bad_image_is_refused():
    with pytest.raises(InputError, match="uint8"):
        letterbox(np.zeros((10, 10, 3), np.float32), Preprocessing(image_size=(32, 32)))
    with pytest.raises(InputError, match="image 1"):
        letterbox_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], Preprocessing((32, 32)))


def test_boxes_forward_and_back_and_clip():
    info = LetterboxInfo(scale=0.5, pad_x=10, pad_y=4, orig_h=100, orig_w=200, new_h=50, new_w=100)
    orig = torch.tensor([[0.0, 0.0, 200.0, 100.0], [12.5, 30.0, 60.0, 99.0]])
    forward = orig * 0.5 + torch.tensor([10.0, 4.0, 10.0, 4.0])
    assert torch.allclose(boxes_to_original(forward, info), orig)
    outside = torch.tensor([[0.0, 0.0, 300.0, 300.0]])  # reaches into the padding and past it
    assert torch.equal(boxes_to_original(outside, info), torch.tensor([[0.0, 0.0, 200.0, 100.0]]))


def test_batched_mapping_equals_per_image():
    infos = [LetterboxInfo(0.5, 10, 4, 100, 200, 50, 100), LetterboxInfo(2.0, 0, 30, 40, 30, 80, 60),
             LetterboxInfo(1.0, 3, 3, 9, 9, 9, 9)]
    g = torch.Generator().manual_seed(0)
    dets = [torch.rand(n, 6, generator=g) * 150 for n in (5, 0, 3)]
    mapped = batch_boxes_to_original(dets, infos)
    assert [len(m) for m in mapped] == [5, 0, 3]
    for d, m, info in zip(dets, mapped, infos):
        assert torch.allclose(m[:, :4], boxes_to_original(d[:, :4], info))
        assert torch.equal(m[:, 4:], d[:, 4:])  # score and class pass through


def _reference_bytes(images: list[np.ndarray], pre: Preprocessing) -> torch.Tensor:
    """The first letterbox_batch's buffer: filled with the pad value, each image resized then pasted in."""
    host = torch.full((len(images), *pre.image_size, 3), pre.pad_value, dtype=torch.uint8)
    buf = host.numpy()
    for i, image in enumerate(images):
        info = pre.geometry(image.shape[0], image.shape[1])
        new_h, new_w = info.new_h, info.new_w
        resized = image if (new_h, new_w) == image.shape[:2] else cv2.resize(image, (new_w, new_h))
        buf[i, info.pad_y:info.pad_y + new_h, info.pad_x:info.pad_x + new_w] = resized
    return host


def _reference_batch(images: list[np.ndarray], pre: Preprocessing, dtype: torch.dtype) -> torch.Tensor:
    """The first letterbox_batch's tensor: converted by torch on the CPU, then made contiguous."""
    return _reference_bytes(images, pre).permute(0, 3, 1, 2).to(dtype).div_(255).contiguous()


# Odd paddings both ways, an image of exactly the input size (no resize), one larger and one tiny.
SIZES = [(50, 80), (120, 61), (96, 128), (301, 17), (7, 300), (95, 127)]


@pytest.mark.parametrize("pad", ["center", "bottom_right"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_batch_equals_the_torch_conversion_bit_for_bit(pad, dtype, memory_format):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    images[0][:16, :16] = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)  # every byte value, for the division
    pre = Preprocessing(image_size=(96, 128), pad=pad, pad_value=114)
    x, infos = letterbox_batch(images, pre, "cpu", dtype=dtype, memory_format=memory_format)
    want = _reference_batch(images, pre, dtype)
    assert x.shape == want.shape and x.dtype == dtype and x.is_contiguous(memory_format=memory_format)
    assert torch.equal(x, want)
    assert infos == [letterbox(image, pre)[1] for image in images]


def test_every_pixel_is_written_without_a_prefilled_buffer():
    # The buffer is no longer filled with the pad value first: the strips and the resized image must cover it.
    rng = np.random.default_rng(2)
    for pad in ("center", "bottom_right"):
        pre = Preprocessing(image_size=(64, 96), pad=pad, pad_value=3)
        for h, w in SIZES:
            image = rng.integers(10, 256, (h, w, 3), dtype=np.uint8)
            out = np.full((64, 96, 3), 77, np.uint8)
            info = _resize_into(image, out, pre)
            assert np.array_equal(out, _reference_bytes([image], pre)[0].numpy()), (pad, h, w)
            single, single_info = letterbox(image, pre)
            assert np.array_equal(single, out) and single_info == info


def test_empty_batch():
    x, infos = letterbox_batch([], Preprocessing((64, 64)))
    assert x.shape == (0, 3, 64, 64) and infos == []


def test_batched_mapping_is_the_per_image_arithmetic_exactly():
    infos = [LetterboxInfo(0.625, 80, 0, 1024, 768, 640, 480), LetterboxInfo(0.3, 1, 7, 333, 1000, 100, 300),
             LetterboxInfo(2.0, 0, 30, 40, 30, 80, 60)]
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        dets = [(torch.rand(n, 6, generator=g) * 700 - 50).to(dtype) for n in (7, 0, 12)]
        for d, m, info in zip(dets, batch_boxes_to_original(dets, infos), infos):
            sx, sy = info.scale_xy
            pad = d.new_tensor([info.pad_x, info.pad_y, info.pad_x, info.pad_y])
            hi = d.new_tensor([info.orig_w, info.orig_h, info.orig_w, info.orig_h])
            want = ((d[:, :4] - pad) / d.new_tensor([sx, sy, sx, sy])).clamp_(min=0).minimum(hi)
            assert m.dtype == dtype and torch.equal(m[:, :4], want) and torch.equal(m[:, 4:], d[:, 4:])
            assert torch.equal(boxes_to_original(d[:, :4], info), want)


@pytest.mark.parametrize("pad", ["center", "bottom_right"])
@pytest.mark.parametrize("longest_side", [None, 60, 100])
def test_training_and_inference_letterbox_agree(pad, longest_side):
    """One rule: the training transform and the Predictor place, scale and pad every image the same way."""
    rng = np.random.default_rng(3)
    pre = Preprocessing(image_size=(64, 96), longest_side=longest_side, pad=pad, pad_value=114)
    for h, w in [*SIZES, (64, 96), (1, 500), (500, 1)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want, info = letterbox(image, pre)
        got, scale, (left, top) = training_letterbox(image, (64, 96), longest_side, pad, 114)
        assert (left, top) == (info.pad_x, info.pad_y) and scale == info.scale_xy, (h, w)
        assert np.array_equal(got, want), (h, w)
        sample = Sample(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0, "x.png")
        assert np.array_equal(LetterboxResize((64, 96), longest_side, pad)(sample).image, want), (h, w)
