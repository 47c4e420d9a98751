"""Training augmentations on `Sample`s (numpy + OpenCV, RGB throughout); every random draw comes from the given rng.

Boxes follow every geometric transform exactly: coordinates are continuous pixel edges (pixel i covers [i, i+1)),
the convention cv2.resize already uses, and warpAffine is given the matching half-pixel shift.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import cv2
import numpy as np

from yolonas import preprocess
from yolonas.data.dataset import Sample
from yolonas.preprocess import PAD_VALUE, PadMode, fit_size

SampleFn = Callable[[np.random.Generator], Sample]


def as_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a (height, width) pair."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resize_to_fit(image: np.ndarray, size: tuple[int, int], longest_side: int | None = None
                  ) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize keeping the aspect ratio so the image fits `size` (or its longest side is `longest_side`).

    Returns (resized image, (x scale, y scale)); the scales are exact for the rounded size, for mapping boxes.
    """
    h, w = image.shape[:2]
    nh, nw, _ = fit_size(h, w, size, longest_side)
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return image, (nw / w, nh / h)


def letterbox(image: np.ndarray, size: int | Sequence[int], longest_side: int | None = None,
              pad: PadMode = "center", pad_value: int = PAD_VALUE
              ) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize to fit `size` (h, w) keeping the aspect ratio, then pad at the centre or bottom-right.

    `yolonas.preprocess.letterbox` in the form the transforms use: returns (image, (x scale, y scale), (left, top)
    padding), so that box' = box * scale + padding.
    """
    out, info = preprocess.letterbox(image, as_hw(size), longest_side, pad, pad_value)
    return out, info.scale_xy, (info.pad_x, info.pad_y)


def scale_boxes(boxes: np.ndarray, scale: tuple[float, float], offset: tuple[float, float] = (0, 0)) -> np.ndarray:
    """boxes * (sx, sy) + (dx, dy) on xyxy rows."""
    return (boxes * np.array([*scale, *scale], np.float32) + np.array([*offset, *offset], np.float32)).astype(
        np.float32)


class LetterboxResize:
    """Letterbox to the training size (longest side to fit, pad 114 at the centre or bottom-right)."""

    def __init__(self, size: int | Sequence[int] = 640, longest_side: int | None = None,
                 pad: PadMode = "center", pad_value: int = PAD_VALUE):
        self.size, self.longest_side, self.pad, self.pad_value = as_hw(size), longest_side, pad, pad_value

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if sample.image.shape[:2] == self.size and self.longest_side is None:
            return sample
        image, scale, offset = letterbox(sample.image, self.size, self.longest_side, self.pad, self.pad_value)
        return sample.replace(image=image, boxes=scale_boxes(sample.boxes, scale, offset))


class MosaicPiece(NamedTuple):
    """One of a mosaic's four images, fitted to the training size, and where it lies on the 2h x 2w canvas."""

    sample: Sample
    image: np.ndarray  # the fitted image
    scale: tuple[float, float]  # of the fit, for the boxes
    rect: tuple[int, int, int, int]  # canvas region (x1, y1, x2, y2) it covers
    crop: tuple[int, int]  # (x, y) in the fitted image of that region's top-left corner


class Mosaic:
    """Four images (this one and three from `sample_fn`) around a random centre on a 2h x 2w canvas, pad 114.

    Each piece is first resized to fit `size` (the training size); RandomAffine then cuts the training size out of
    the canvas. When skipped (probability 1 - p, or mosaic closed) the image is only resized to fit `size`, so the
    next transforms see the same scale either way.
    """

    def __init__(self, sample_fn: SampleFn, size: int | Sequence[int] = 640, p: float = 1.0,
                 pad_value: int = PAD_VALUE):
        self.sample_fn, self.size, self.p, self.pad_value = sample_fn, as_hw(size), p, pad_value

    def fit(self, sample: Sample) -> Sample:
        """The image resized to fit the training size, boxes with it."""
        image, scale = resize_to_fit(sample.image, self.size)
        return sample.replace(image=image, boxes=scale_boxes(sample.boxes, scale))

    def closed(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """What the transform does with mosaic closed: fit only."""
        return self.fit(sample)

    @property
    def canvas_hw(self) -> tuple[int, int]:
        return 2 * self.size[0], 2 * self.size[1]

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return self.fit(sample)
        return self.paint(sample, self.pieces(sample, rng))

    def pieces(self, sample: Sample, rng: np.random.Generator) -> list[MosaicPiece]:
        """The random part: draws the three other samples, then the centre; where each fitted image goes."""
        h, w = self.size
        samples = [sample] + [self.sample_fn(rng) for _ in range(3)]
        yc, xc = int(rng.uniform(0.5 * h, 1.5 * h)), int(rng.uniform(0.5 * w, 1.5 * w))
        pieces = []
        for k, s in enumerate(samples):
            fitted, scale = resize_to_fit(s.image, self.size)
            ph, pw = fitted.shape[:2]
            # canvas region (x1, y1, x2, y2) of this piece, which meets the centre at its inner corner
            x1, x2 = (max(xc - pw, 0), xc) if k in (0, 2) else (xc, min(xc + pw, 2 * w))
            y1, y2 = (max(yc - ph, 0), yc) if k in (0, 1) else (yc, min(yc + ph, 2 * h))
            crop = (pw - (x2 - x1) if k in (0, 2) else 0), (ph - (y2 - y1) if k in (0, 1) else 0)
            pieces.append(MosaicPiece(s, fitted, scale, (x1, y1, x2, y2), crop))
        return pieces

    def paint(self, sample: Sample, pieces: list[MosaicPiece],
              window: tuple[int, int, int, int] | None = None) -> Sample:
        """The canvas, or only its region `window` (x0, y0, x1, y1), with the pieces in it; boxes of all four pieces
        in canvas coordinates whatever the window (cut to the visible part of their piece, empty ones dropped)."""
        x0, y0, x1w, y1w = window or (0, 0, self.canvas_hw[1], self.canvas_hw[0])
        shape = (y1w - y0, x1w - x0, 3)
        # the pad shows only where no piece covers the window; often (scale >= 1) the pieces cover all of it
        canvas = np.empty(shape, np.uint8) if covers(pieces, window) else np.full(shape, self.pad_value, np.uint8)
        boxes, classes, crowd = [], [], []
        for t in pieces:
            x1, y1, x2, y2 = t.rect
            ax1, ay1, ax2, ay2 = max(x1, x0), max(y1, y0), min(x2, x1w), min(y2, y1w)  # the part in the window
            if ax2 > ax1 and ay2 > ay1:
                tx, ty = t.crop[0] + ax1 - x1, t.crop[1] + ay1 - y1
                canvas[ay1 - y0:ay2 - y0, ax1 - x0:ax2 - x0] = t.image[ty:ty + ay2 - ay1, tx:tx + ax2 - ax1]
            b = scale_boxes(t.sample.boxes, t.scale, (x1 - t.crop[0], y1 - t.crop[1]))
            boxes.append(np.clip(b, [x1, y1, x1, y1], [x2, y2, x2, y2]).astype(np.float32))  # the visible part
            classes.append(t.sample.classes)
            crowd.append(t.sample.crowd)
        out = sample.replace(image=canvas, boxes=np.concatenate(boxes), classes=np.concatenate(classes),
                             crowd=np.concatenate(crowd))
        return out.select((out.boxes[:, 2] > out.boxes[:, 0]) & (out.boxes[:, 3] > out.boxes[:, 1]))


def covers(pieces: list[MosaicPiece], window: tuple[int, int, int, int] | None) -> bool:
    """Whether the four pieces, which meet at the mosaic's centre, together cover the canvas region `window`."""
    if window is None:
        return False
    x0, y0, x1, y1 = window
    xc, yc = pieces[0].rect[2], pieces[0].rect[3]  # the top-left piece ends at the centre
    for k, t in enumerate(pieces):  # each piece must cover the window's part in its quadrant
        qx0, qx1 = (x0, min(x1, xc)) if k in (0, 2) else (max(x0, xc), x1)
        qy0, qy1 = (y0, min(y1, yc)) if k in (0, 1) else (max(y0, yc), y1)
        if qx1 > qx0 and qy1 > qy0 and not (t.rect[0] <= qx0 and t.rect[1] <= qy0 and t.rect[2] >= qx1
                                             and t.rect[3] >= qy1):
            return False
    return True


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2, area_thr: float = 0.1,
                   ar_thr: float = 20, eps: float = 1e-16) -> np.ndarray:
    """Keep mask for boxes still worth training on: sides > wh_thr px, area ratio > area_thr, aspect < ar_thr.

    `before` must already carry the transform's scale, so the area ratio measures what was cut off.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def affine_matrix(in_hw: tuple[int, int], out_hw: tuple[int, int], rng: np.random.Generator, degrees: float,
                  translate: float, scale: tuple[float, float], shear: float) -> tuple[np.ndarray, float]:
    """A random 3x3 affine map (centre, rotate + scale, shear, translate into the output) and its scale."""
    centre = np.eye(3)
    centre[:2, 2] = (-in_hw[1] / 2, -in_hw[0] / 2)
    rotate = np.eye(3)
    s = rng.uniform(*scale)
    rotate[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=rng.uniform(-degrees, degrees), scale=s)
    shearing = np.eye(3)
    shearing[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    shearing[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    move = np.eye(3)
    move[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[1]
    move[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_hw[0]
    return move @ shearing @ rotate @ centre, s


class RandomAffine:
    """Random rotation, scale, shear and translation into the output size; border 114.

    Boxes map by their 4 corners and are re-fitted, clipped, then filtered like super-gradients
    (sides >= 2 px, >= 10 % of the scaled area left, aspect < 20).
    """

    def __init__(self, size: int | Sequence[int] = 640, degrees: float = 0.0, translate: float = 0.25,
                 scale: tuple[float, float] = (0.5, 1.5), shear: float = 0.0, border_value: int = PAD_VALUE,
                 wh_thr: float = 2, area_thr: float = 0.1, ar_thr: float = 20):
        self.size, self.degrees, self.translate, self.scale, self.shear = as_hw(size), degrees, translate, scale, shear
        self.border_value, self.wh_thr, self.area_thr, self.ar_thr = border_value, wh_thr, area_thr, ar_thr

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        m, s = self.matrix(sample.image.shape[:2], rng)
        return self.apply(sample, m, s)

    def matrix(self, in_hw: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """The random part: a 3x3 map from an in_hw image's pixel edges to the output's, and its scale."""
        return affine_matrix(in_hw, self.size, rng, self.degrees, self.translate, self.scale, self.shear)

    def apply(self, sample: Sample, m: np.ndarray, s: float, origin: tuple[int, int] = (0, 0)) -> Sample:
        """Warp by `m`; `sample.image` holds the input from pixel `origin` (x, y) on (a window of it, see
        MosaicAffine), its boxes are in the whole input's coordinates."""
        (h, w), image = self.size, sample.image
        pixel = m.copy()  # warpAffine samples at pixel centres: shift by half a pixel on both sides
        pixel[:2, 2] += m[:2, :2] @ (origin[0] + 0.5, origin[1] + 0.5) - 0.5
        image = cv2.warpAffine(image, pixel[:2], dsize=(w, h), flags=cv2.INTER_LINEAR,
                               borderValue=(self.border_value,) * 3)
        b = sample.boxes.astype(np.float64)
        corners = b[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(-1, 4, 2) @ m[:2, :2].T + m[:2, 2]
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        keep = box_candidates(b * s, boxes, self.wh_thr, self.area_thr, self.ar_thr)
        return sample.replace(image=image, boxes=boxes.astype(np.float32)).select(keep)


class MosaicAffine:
    """Mosaic then RandomAffine as one transform: the same draws, the same boxes, the same pixels up to rounding,
    but only the part of the mosaic canvas the warp reads is built.

    The canvas is 2h x 2w and the warp keeps h x w of it scaled by 0.5-1.5: on average a third of the canvas is
    read. Filling and painting just that window (the output's corners mapped back, a 2 px margin for the bilinear
    taps, within the canvas; no fill where the pieces cover it) took 1.1 ms per 640 image instead of 1.3 for the two
    steps on this project's 2-core EPYC (1.7 vs 2.2 with the machine busy). Outside the canvas the border value is
    the same either way. A skipped or closed mosaic goes through `Mosaic.fit` and the affine as before.
    """

    def __init__(self, mosaic: Mosaic, affine: RandomAffine):
        self.mosaic, self.affine = mosaic, affine

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.mosaic.p:
            return self.affine(self.mosaic.fit(sample), rng)
        pieces = self.mosaic.pieces(sample, rng)
        m, s = self.affine.matrix(self.mosaic.canvas_hw, rng)
        window = read_window(m, self.affine.size, self.mosaic.canvas_hw)
        return self.affine.apply(self.mosaic.paint(sample, pieces, window), m, s, origin=window[:2])

    def closed(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """What the transform does with mosaic closed: fit, then the affine."""
        return self.affine(self.mosaic.fit(sample), rng)


def read_window(m: np.ndarray, out_hw: tuple[int, int], in_hw: tuple[int, int], margin: int = 2
                ) -> tuple[int, int, int, int]:
    """The input region (x0, y0, x1, y1), within the input, that a warp by `m` into out_hw can read."""
    h, w = out_hw
    inv = cv2.invertAffineTransform(m[:2])  # plain floats below: this runs once per image, numpy's overhead shows
    xs, ys = [], []
    for u, v in ((0, 0), (w, 0), (0, h), (w, h)):
        xs.append(inv[0, 0] * u + inv[0, 1] * v + inv[0, 2])
        ys.append(inv[1, 0] * u + inv[1, 1] * v + inv[1, 2])
    x0, y0 = max(math.floor(min(xs)) - margin, 0), max(math.floor(min(ys)) - margin, 0)
    x1, y1 = min(math.ceil(max(xs)) + margin, in_hw[1]), min(math.ceil(max(ys)) + margin, in_hw[0])
    if x1 <= x0 or y1 <= y0:  # the output lies wholly outside the input: any pixel of it gives the border
        return 0, 0, 1, 1
    return x0, y0, x1, y1


class MixUp:
    """With probability p, blend 0.5/0.5 with a second sample (letterboxed to this size if needed); boxes of both."""

    def __init__(self, sample_fn: SampleFn, p: float = 1.0, pad_value: int = PAD_VALUE):
        self.sample_fn, self.p, self.pad_value = sample_fn, p, pad_value

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        other = LetterboxResize(sample.image.shape[:2], pad_value=self.pad_value)(self.sample_fn(rng))
        image = cv2.addWeighted(sample.image, 0.5, other.image, 0.5, 0.0)
        return sample.replace(image=image, boxes=np.concatenate([sample.boxes, other.boxes]),
                              classes=np.concatenate([sample.classes, other.classes]),
                              crowd=np.concatenate([sample.crowd, other.crowd]))


class HSV:
    """With probability p, shift hue, saturation and value by up to the gains (OpenCV HSV units, hue 0..179).

    As in super-gradients (from YOLOX): each of the three shifts is applied or not at random. The defaults are the
    published YOLO-NAS COCO recipe's.
    """

    def __init__(self, hgain: float = 18, sgain: float = 30, vgain: float = 30, p: float = 0.5):
        self.gains, self.p = np.array([hgain, sgain, vgain], dtype=np.float64), p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        if rng.random() >= self.p:
            return sample
        dh, ds, dv = (rng.uniform(-1, 1, 3) * self.gains * rng.integers(0, 2, 3)).astype(np.int64)
        if dh == ds == dv == 0:
            return sample
        hsv = cv2.cvtColor(sample.image, cv2.COLOR_RGB2HSV)
        if dh:  # hue wraps around (8-bit hue is 0..179): a LUT on the hue plane only
            h, s, v = cv2.split(hsv)
            hsv = cv2.merge([cv2.LUT(h, ((np.arange(256) + dh) % 180).astype(np.uint8)), s, v])
        # S and V: saturating add / subtract, i.e. clip(x + d, 0, 255); ~10x cheaper than a LUT pass per plane, as
        # long as the scalar is not negative (OpenCV then takes a slow path): raise and lower apart
        up, down = (0, max(int(ds), 0), max(int(dv), 0), 0), (0, max(-int(ds), 0), max(-int(dv), 0), 0)
        if any(up):
            hsv = cv2.add(hsv, up)
        if any(down):
            hsv = cv2.subtract(hsv, down)
        return sample.replace(image=cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB))


class RandomApply:
    """A transform that happens with probability p (one draw of the sample's RNG); otherwise the sample as it is."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample if rng.random() >= self.p else self.apply(sample)

    def apply(self, sample: Sample) -> Sample:
        raise NotImplementedError


class HorizontalFlip(RandomApply):
    """Mirror left-right with probability p."""

    def apply(self, sample: Sample) -> Sample:
        w = sample.image.shape[1]
        boxes = sample.boxes.copy()
        boxes[:, [0, 2]] = w - sample.boxes[:, [2, 0]]
        # cv2.flip: ~40x faster than a contiguous copy of image[:, ::-1] (0.05 vs 2-3 ms at 640), same pixels
        return sample.replace(image=cv2.flip(sample.image, 1), boxes=boxes)


class ChannelSwap(RandomApply):
    """Swap RGB <-> BGR with probability p (the published COCO recipe uses 0.5: colour-order robustness)."""

    def apply(self, sample: Sample) -> Sample:
        return sample.replace(image=np.ascontiguousarray(sample.image[..., ::-1]))


class PlanarLayout:
    """Lay the image's memory out as channel planes (C, H, W) while it still reads as H x W x C: the last transform.

    Same values, same shape; `collate`'s np.stack keeps the layout, so its [B, H, W, 3] -> [B, 3, H, W] permute is
    already contiguous instead of a byte-wise transposing copy of the whole batch (~1.5 ms per 640 image; the split
    into planes here, straight into the output, costs ~0.08 ms). cv2 needs HWC-contiguous input, so nothing should
    follow this transform.
    """

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        image = sample.image
        if image.ndim != 3 or is_planar(image):
            return sample
        planes = np.empty((image.shape[2], *image.shape[:2]), image.dtype)
        written = cv2.split(np.ascontiguousarray(image), list(planes))  # into the planes given, when they fit
        if not np.shares_memory(written[0], planes):  # an OpenCV that allocated its own
            planes = np.stack(written)
        return sample.replace(image=planes.transpose(1, 2, 0))


def is_planar(image: np.ndarray) -> bool:
    """Whether an H x W x C image is stored as C-contiguous channel planes."""
    return image.ndim == 3 and image.transpose(2, 0, 1).flags.c_contiguous


class Compose:
    """Transforms in order. `close_mosaic()` (or `mosaic=False` per call) switches Mosaic and MixUp off; Mosaic then
    only resizes the image to fit, so the rest of the pipeline is unchanged. `source`, when set, is where the
    pipeline's Mosaic and MixUp draw their other samples from (e.g. images cached at the training size)."""

    def __init__(self, transforms: Sequence[Callable[[Sample, np.random.Generator], Sample]], source=None):
        self.transforms = list(transforms)
        self.mosaic = True
        self.source = source

    def close_mosaic(self) -> None:
        self.mosaic = False

    def __call__(self, sample: Sample, rng: np.random.Generator, mosaic: bool | None = None) -> Sample:
        on = self.mosaic and (mosaic is None or mosaic)
        for t in self.transforms:
            if not on and isinstance(t, MixUp):
                continue
            sample = t.closed(sample, rng) if not on and isinstance(t, (Mosaic, MosaicAffine)) else t(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({[type(t).__name__ for t in self.transforms]}, mosaic={self.mosaic})"
