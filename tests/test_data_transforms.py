"""Augmentations: boxes still frame the drawn rectangles after every geometric transform; same seed, same result."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from yolonas.data import (
    HSV,
    ChannelSwap,
    Compose,
    HorizontalFlip,
    LetterboxResize,
    MixUp,
    Mosaic,
    RandomAffine,
    Sample,
    TrainDataset,
    letterbox,
    load_data_yaml,
    training_transforms,
)
from yolonas.data.transforms import MosaicAffine, PlanarLayout, box_candidates, covers, is_planar, read_window

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
                    [255, 255, 255], [255, 128, 0], [128, 0, 255], [0, 128, 255], [128, 255, 0], [255, 0, 128]])


def rect_sample(rects: list[tuple[int, int, int, int, int]], h: int = 120, w: int = 160, image_id: int = 0) -> Sample:
    """A black image with filled rectangles (class, x1, y1, x2, y2), each in its class colour; boxes = edges."""
    image = np.zeros((h, w, 3), np.uint8)
    for c, x1, y1, x2, y2 in rects:
        image[y1:y2, x1:x2] = COLOURS[c]
    boxes = np.array([r[1:] for r in rects], np.float32).reshape(-1, 4)
    return Sample(image, boxes, np.array([r[0] for r in rects], np.int64), image_id, f"{image_id}.png")


def assert_boxes_frame_colours(sample: Sample, tol: float = 1.5, contain: bool = False) -> int:
    """Each box equals the extent of its colour's pixels (within tol px), or with `contain` holds them all;
    returns how many boxes were checked."""
    for box, c in zip(sample.boxes, sample.classes):
        mask = (np.abs(sample.image.astype(int) - COLOURS[c]) < 60).all(-1)  # strict: blends of others stay out
        ys, xs = np.nonzero(mask)
        assert len(xs), f"class {c}: box {box} but no pixels of its colour"
        extent = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        if contain:
            assert (box[:2] <= extent[:2] + tol).all() and (box[2:] >= extent[2:] - tol).all(), (c, box, extent)
        else:
            np.testing.assert_allclose(box, extent, atol=tol, err_msg=f"class {c}")
    return len(sample.boxes)


def scene(image_id: int = 0, h: int = 120, w: int = 160, first_class: int = 0) -> Sample:
    return rect_sample([(first_class, 10, 12, 50, 60), (first_class + 1, 70, 20, 150, 45),
                        (first_class + 2, 30, 75, 110, 110)], h, w, image_id)


def test_letterbox_semantics():
    image = np.zeros((100, 200, 3), np.uint8)
    out, scale, (left, top) = letterbox(image, (64, 96))
    assert out.shape == (64, 96, 3) and scale == (96 / 200, 48 / 100) and (left, top) == (0, 8)
    assert (out[:8] == 114).all() and (out[56:] == 114).all()
    out, _, pad = letterbox(image, 64, pad="bottom_right")
    assert pad == (0, 0) and (out[32:] == 114).all()
    _, scale, pad = letterbox(image, (64, 64), longest_side=60, pad="center")
    assert scale == (60 / 200, 30 / 100) and pad == (2, 17)


@pytest.mark.parametrize("pad", ["center", "bottom_right"])
def test_letterbox_keeps_boxes(pad):
    out = LetterboxResize((256, 200), pad=pad)(scene(), np.random.default_rng(0))
    assert out.image.shape == (256, 200, 3)
    assert assert_boxes_frame_colours(out) == 3


def test_flip_and_channel_swap():
    rng = np.random.default_rng(0)
    s = scene()
    out = HorizontalFlip(p=1.0)(s, rng)
    assert assert_boxes_frame_colours(out, tol=0) == 3
    swapped = ChannelSwap(p=1.0)(s, rng)
    np.testing.assert_array_equal(swapped.image, s.image[..., ::-1])
    np.testing.assert_array_equal(swapped.boxes, s.boxes)
    assert HorizontalFlip(p=0.0)(s, rng) is s and ChannelSwap(p=0.0)(s, rng) is s


@pytest.mark.parametrize("seed", range(4))
def test_random_affine_keeps_boxes(seed):
    affine = RandomAffine((128, 128), degrees=20, translate=0.1, scale=(0.6, 1.3), shear=8, area_thr=0.3)
    out = affine(scene(), np.random.default_rng(seed))
    assert out.image.shape == (128, 128, 3)
    assert_boxes_frame_colours(out, tol=2.0)  # a rotated corner's tip pixel is only partly covered


def test_random_affine_filters_cut_boxes():
    # shifting far right leaves the right-most rectangle mostly outside: dropped; the others kept exactly
    affine = RandomAffine((120, 160), translate=0.0, scale=(1.0, 1.0))
    out = affine(rect_sample([(0, 10, 10, 40, 40), (1, 150, 10, 160, 100), (2, 60, 60, 61, 80)]),
                 np.random.default_rng(0))
    assert out.classes.tolist() == [0, 1]  # class 2 is 1 px wide (< 2 px)
    np.testing.assert_allclose(out.boxes, [[10, 10, 40, 40], [150, 10, 160, 100]], atol=1e-4)
    keep = box_candidates(np.array([[0, 0, 100, 100], [0, 0, 100, 100], [0, 0, 100, 4]], np.float64),
                          np.array([[0, 0, 50, 50], [0, 0, 5, 100], [0, 0, 100, 4]], np.float64))
    assert keep.tolist() == [True, False, False]  # area ratio 0.05 < 0.1; aspect 25 > 20


def others(h=90, w=130):
    """Three other scenes with their own colours, served in turn."""
    pool = [scene(1, h, w, 3), scene(2, w, h, 6), scene(3, h, h, 9)]
    calls = []

    def sample_fn(rng):
        calls.append(1)
        return pool[(len(calls) - 1) % 3]

    return sample_fn, calls


@pytest.mark.parametrize("seed", range(3))
def test_mosaic_keeps_boxes(seed):
    sample_fn, calls = others()
    out = Mosaic(sample_fn, size=(96, 128))(scene(), np.random.default_rng(seed))
    assert out.image.shape == (192, 256, 3) and len(calls) == 3
    assert assert_boxes_frame_colours(out) >= 4
    assert out.image_id == 0


def test_mosaic_then_affine_pipeline_keeps_boxes():
    sample_fn, _ = others()
    for degrees in (0, 10):
        pipeline = Compose([Mosaic(sample_fn, (96, 128)), RandomAffine((96, 128), degrees, scale=(0.8, 1.2)),
                            HorizontalFlip(0.5), LetterboxResize((96, 128))])
        for seed in range(4):
            out = pipeline(scene(), np.random.default_rng(seed))
            assert out.image.shape == (96, 128, 3)
            # a rotated box cut by the border is re-fitted from its corners, then clipped: it holds the visible
            # part but may be loose (as in super-gradients and YOLOX); unrotated boxes are exact
            assert_boxes_frame_colours(out, tol=2.0, contain=degrees > 0)


def test_close_mosaic_only_fits_the_image():
    def never(rng):
        raise AssertionError("mosaic and mixup are closed: no other sample is needed")

    pipeline = Compose([Mosaic(never, 240), RandomAffine(240, translate=0.0, scale=(1, 1)), MixUp(never, p=1.0),
                        LetterboxResize(240)])
    pipeline.close_mosaic()
    out = pipeline(scene(), np.random.default_rng(0))
    assert out.image.shape == (240, 240, 3) and len(out.boxes) == 3
    assert_boxes_frame_colours(out)
    # scale 1.5 (160 -> 240 wide), centred vertically: (240 - 180) / 2 = 30
    np.testing.assert_allclose(out.boxes[0], [15, 12 * 1.5 + 30, 75, 60 * 1.5 + 30], atol=1e-3)


def test_mixup_blends_and_concatenates():
    a = scene()
    b = rect_sample([(5, 0, 0, 20, 20)], 60, 60)
    out = MixUp(lambda rng: b, p=1.0)(a, np.random.default_rng(0))
    assert out.classes.tolist() == [0, 1, 2, 5] and out.image.shape == a.image.shape
    np.testing.assert_allclose(out.boxes[3], [20, 0, 60, 40])  # b letterboxed to 120x160: scale 2, 20 px left pad
    # pixel (5, 5): half of black and half of colour 5; pixel (100, 150): black and pad 114
    np.testing.assert_allclose(out.image[5, 25], COLOURS[5] / 2, atol=1)
    np.testing.assert_allclose(out.image[100, 150], [57, 57, 57], atol=1)


def test_hsv_changes_colours_not_boxes():
    s = scene()
    s = s.replace(image=(s.image // 2 + 60).astype(np.uint8))
    hsv = HSV(hgain=30, sgain=60, vgain=60, p=1.0)
    outs = [hsv(s, np.random.default_rng(seed)) for seed in range(6)]
    assert any(not np.array_equal(o.image, s.image) for o in outs)
    assert all(np.array_equal(o.boxes, s.boxes) and o.image.dtype == np.uint8 for o in outs)
    again = hsv(s, np.random.default_rng(3))
    np.testing.assert_array_equal(again.image, outs[3].image)
    assert HSV(p=0.0)(s, np.random.default_rng(0)) is s


def test_training_pipeline_is_reproducible(coco128):
    ds = load_data_yaml(coco128 / "data.yaml", "train")
    tf = training_transforms(ds, 160, mixup=0.5, degrees=5, hsv=1.0, channel_swap=0.5)
    a, b = TrainDataset(ds, tf, seed=1), TrainDataset(ds, tf, seed=1)
    for key in [(3, 0, True), (3, 1, True), (77, 2, False)]:
        x, y = a[key], b[key]
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.boxes, y.boxes)
        assert x.image.shape == (160, 160, 3) and x.boxes.dtype == np.float32 and x.classes.dtype == np.int64
        assert (x.boxes[:, 2:] > x.boxes[:, :2]).all() and (x.boxes >= 0).all() and (x.boxes <= 160).all()
    assert not np.array_equal(a[(3, 0, True)].image, a[(3, 1, True)].image)  # another epoch, another draw
    assert not np.array_equal(a[(3, 0, True)].image, TrainDataset(ds, tf, seed=2)[(3, 0, True)].image)


def mosaic_then_affine(degrees: float, seed: int, fused: bool) -> Sample:
    """scene() through Mosaic + RandomAffine at (96, 128), as two transforms or as one MosaicAffine."""
    sample_fn, _ = others()
    mosaic = Mosaic(sample_fn, (96, 128))
    affine = RandomAffine((96, 128), degrees, translate=0.2, scale=(0.5, 1.5))
    pipeline = Compose([MosaicAffine(mosaic, affine)] if fused else [mosaic, affine])
    return pipeline(scene(), np.random.default_rng(seed))


@pytest.mark.parametrize("seed", range(6))
def test_mosaic_affine_is_mosaic_then_affine(seed):
    # same draws, same boxes; without rotation the same pixels too (the window holds every pixel the warp reads)
    a, b = mosaic_then_affine(0, seed, fused=False), mosaic_then_affine(0, seed, fused=True)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert a.classes.tolist() == b.classes.tolist()
    # rotated: sub-pixel coordinates may round apart at a few edge pixels
    a, b = mosaic_then_affine(15, seed, fused=False), mosaic_then_affine(15, seed, fused=True)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert (a.image != b.image).any(-1).mean() < 0.01


def test_read_window_bounds():
    m = np.array([[1.0, 0, -100], [0, 1.0, -50], [0, 0, 1]])  # output (40 x 60) = input from (100, 50) on
    assert read_window(m, (40, 60), (200, 300)) == (98, 48, 162, 92)
    assert read_window(np.eye(3) * [[0.5], [0.5], [1]], (40, 60), (200, 300)) == (0, 0, 122, 82)
    assert read_window(np.array([[1.0, 0, 500], [0, 1.0, 0], [0, 0, 1]]), (40, 60), (200, 300)) == (0, 0, 1, 1)


def test_closed_mosaic_affine_fits_then_warps():
    def never(rng):
        raise AssertionError("mosaic is closed: no other sample is needed")

    fused = Compose([MosaicAffine(Mosaic(never, 240), RandomAffine(240, translate=0.0, scale=(1, 1))),
                     LetterboxResize(240)])
    fused.close_mosaic()
    out = fused(scene(), np.random.default_rng(0))
    assert out.image.shape == (240, 240, 3) and len(out.boxes) == 3
    assert_boxes_frame_colours(out)


def test_planar_layout_keeps_values():
    s = scene()
    out = PlanarLayout()(s)
    assert is_planar(out.image) and not is_planar(s.image)
    np.testing.assert_array_equal(out.image, s.image)
    assert PlanarLayout()(out) is out


def test_flip_mirrors_pixels_exactly():
    s = scene()
    np.testing.assert_array_equal(HorizontalFlip(p=1.0)(s, np.random.default_rng(0)).image, s.image[:, ::-1])


def reference_hsv(image: np.ndarray, dh: int, ds: int, dv: int) -> np.ndarray:
    """Every channel through its LUT, shift 0 or not."""
    x = np.arange(256)
    luts = [((x + dh) % 180).astype(np.uint8), np.clip(x + ds, 0, 255).astype(np.uint8),
            np.clip(x + dv, 0, 255).astype(np.uint8)]
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    return cv2.cvtColor(np.stack([lut[hsv[..., c]] for c, lut in enumerate(luts)], -1), cv2.COLOR_HSV2RGB)


@pytest.mark.parametrize("seed", range(8))
def test_hsv_equals_all_three_luts(seed):
    # channels whose shift is 0 skip their LUT pass: the result must not change
    s = scene()
    s = s.replace(image=(s.image // 2 + 60).astype(np.uint8))
    hsv = HSV(hgain=30, sgain=60, vgain=60, p=1.0)
    rng = np.random.default_rng(seed)
    rng.random()  # HSV's p draw
    dh, ds, dv = (rng.uniform(-1, 1, 3) * hsv.gains * rng.integers(0, 2, 3)).astype(np.int64)
    out = hsv(s, np.random.default_rng(seed))
    np.testing.assert_array_equal(out.image, reference_hsv(s.image, dh, ds, dv) if dh or ds or dv else s.image)


@pytest.mark.parametrize("seed", range(20))
def test_covers_means_every_window_pixel_is_painted(seed):
    # where `covers` says the pieces cover the window, Mosaic.paint leaves the pad out: no pixel may be missed
    rng = np.random.default_rng(seed)
    sample_fn, _ = others(int(rng.integers(40, 120)), int(rng.integers(40, 160)))
    mosaic = Mosaic(sample_fn, (96, 128))
    pieces = mosaic.pieces(scene(), rng)
    for _ in range(20):
        x0, y0 = int(rng.integers(0, 250)), int(rng.integers(0, 190))
        window = (x0, y0, int(rng.integers(x0 + 1, 257)), int(rng.integers(y0 + 1, 193)))
        painted = np.zeros((192, 256), bool)
        for t in pieces:
            painted[t.rect[1]:t.rect[3], t.rect[0]:t.rect[2]] = True
        inside = painted[window[1]:window[3], window[0]:window[2]].all()
        assert covers(pieces, window) == inside, (window, [t.rect for t in pieces])
