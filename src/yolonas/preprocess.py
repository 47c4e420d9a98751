"""How an image becomes model input: `Preprocessing`, the letterbox parameters and the one letterbox rule.

Training, predict, validation, export and calibration all letterbox through `letterbox_geometry` (where the
resized image goes) and `letterbox_into` (the pixels), so their inputs agree to the byte.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, NamedTuple

import cv2
import numpy as np

from yolonas.errors import InputError

PAD_VALUE = 114  # the grey of the padding, as super-gradients and Ultralytics pad
STRIDE = 32  # the model downsamples 32x: its input sides are multiples of this
PadMode = Literal["center", "bottom_right"]


def check_input_size(h: int, w: int) -> None:
    """Raise `InputError` unless h x w is a model input size: positive multiples of `STRIDE`."""
    if h % STRIDE or w % STRIDE or h < STRIDE or w < STRIDE:
        raise InputError(f"input size {h}x{w} must be a positive multiple of {STRIDE} in both sides (the model "
                         "downsamples 32x); try 320, 416, 512 or 640")


@dataclass
class Preprocessing:
    """How an image becomes model input: resize the longest side, pad to `image_size`, scale to [0, 1].

    Deci's COCO weights were evaluated with longest side 636 padded to 640 at the centre.
    """

    image_size: tuple[int, int] = (640, 640)  # (height, width) of the model input
    longest_side: int | None = None  # resize target for the longest image side; None = fit image_size
    pad: PadMode = "center"
    pad_value: int = PAD_VALUE

    def __post_init__(self) -> None:
        check_input_size(*self.image_size)

    def to_dict(self) -> dict:
        """Plain types only, for checkpoints and ONNX metadata."""
        return {**dataclasses.asdict(self), "image_size": list(self.image_size)}

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        """The inverse of `to_dict`; a missing field takes its default."""
        d = dict(d)
        d["image_size"] = tuple(d.get("image_size", (640, 640)))
        return cls(**d)

    def geometry(self, h: int, w: int) -> LetterboxInfo:
        """Where an h x w image lands in the model input."""
        return letterbox_geometry(h, w, self.image_size, self.longest_side, self.pad)


COCO_PREPROCESSING = Preprocessing(image_size=(640, 640), longest_side=636, pad="center", pad_value=PAD_VALUE)


class LetterboxInfo(NamedTuple):
    """How one image was letterboxed: input pixel = original pixel * scale + pad (per axis)."""

    scale: float  # the nominal resize factor
    pad_x: int  # left padding in input pixels
    pad_y: int  # top padding in input pixels
    orig_h: int
    orig_w: int
    new_h: int  # the resized image's size; new / orig is the exact per-axis scale after rounding
    new_w: int

    @property
    def scale_xy(self) -> tuple[float, float]:
        """The exact (x, y) scale of the rounded resize, for mapping boxes."""
        return self.new_w / self.orig_w, self.new_h / self.orig_h


def fit_size(h: int, w: int, size: tuple[int, int], longest_side: int | None = None) -> tuple[int, int, float]:
    """(new height, new width, scale) that fit an h x w image into `size` keeping its aspect ratio.

    `longest_side` resizes the longest side to that length instead, never beyond `size`. Rounded as
    super-gradients rounds.
    """
    r = min(size[0] / h, size[1] / w)
    if longest_side is not None:
        r = min(r, longest_side / max(h, w))
    return min(size[0], max(1, round(h * r))), min(size[1], max(1, round(w * r))), r


def letterbox_geometry(h: int, w: int, size: tuple[int, int], longest_side: int | None = None,
                       pad: PadMode = "center") -> LetterboxInfo:
    """The letterbox rule: scale, resized size and padding offsets of an h x w image in `size` (height, width)."""
    out_h, out_w = size
    new_h, new_w, scale = fit_size(h, w, (out_h, out_w), longest_side)
    if pad == "center":
        # Integer halving puts the odd pixel at the bottom/right, as super-gradients' centre padding does.
        pad_y, pad_x = (out_h - new_h) // 2, (out_w - new_w) // 2
    elif pad == "bottom_right":
        pad_y, pad_x = 0, 0
    else:
        raise InputError(f"unknown padding mode {pad!r}: use 'center' or 'bottom_right'")
    return LetterboxInfo(scale, pad_x, pad_y, h, w, new_h, new_w)


def letterbox_into(image: np.ndarray, out: np.ndarray, longest_side: int | None = None, pad: PadMode = "center",
                   pad_value: int = PAD_VALUE) -> LetterboxInfo:
    """Letterbox an HWC uint8 `image` into the preallocated `out` [H, W, 3], writing all of it."""
    info = letterbox_geometry(image.shape[0], image.shape[1], out.shape[:2], longest_side, pad)
    y, x, new_h, new_w = info.pad_y, info.pad_x, info.new_h, info.new_w
    # Only the padding strips are filled and the image is resized straight into its place: each byte written once.
    out[:y] = pad_value
    out[y + new_h:] = pad_value
    out[y:y + new_h, :x] = pad_value
    out[y:y + new_h, x + new_w:] = pad_value
    place = out[y:y + new_h, x:x + new_w]
    if (new_h, new_w) == image.shape[:2]:
        place[...] = image
    else:
        resized = cv2.resize(image, (new_w, new_h), dst=place, interpolation=cv2.INTER_LINEAR)
        if resized is not place:  # OpenCV wrote an array of its own instead
            place[...] = resized
    return info


def letterbox(image: np.ndarray, size: tuple[int, int], longest_side: int | None = None, pad: PadMode = "center",
              pad_value: int = PAD_VALUE) -> tuple[np.ndarray, LetterboxInfo]:
    """A new `size` (height, width) uint8 image: `image` resized keeping its aspect ratio, then padded."""
    out = np.empty((*size, 3), dtype=np.uint8)
    return out, letterbox_into(image, out, longest_side, pad, pad_value)
