"""Letterboxing: resize an image into the model's input size keeping its aspect ratio, and map boxes back."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch

from yolonas.arch.model import Preprocessing
from yolonas.data.transforms import fit_size
from yolonas.errors import InputError


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
        return self.new_w / self.orig_w, self.new_h / self.orig_h


def letterbox_params(h: int, w: int, pre: Preprocessing) -> tuple[LetterboxInfo, int, int]:
    """The scale, padding and resized (height, width) that `pre` gives an image of size h x w."""
    out_h, out_w = pre.image_size
    new_h, new_w, scale = fit_size(h, w, (out_h, out_w), pre.longest_side)
    if pre.pad == "center":
        # Integer halving puts the odd pixel at the bottom/right, as super-gradients' centre padding does.
        pad_y, pad_x = (out_h - new_h) // 2, (out_w - new_w) // 2
    elif pre.pad == "bottom_right":
        pad_y, pad_x = 0, 0
    else:
        raise InputError(f"unknown padding mode {pre.pad!r}: use 'center' or 'bottom_right'")
    return LetterboxInfo(scale, pad_x, pad_y, h, w, new_h, new_w), new_h, new_w


def check_image(image: np.ndarray, name: str = "image") -> None:
    """Raise `InputError` unless `image` is an RGB uint8 HWC array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"{name}: expected an RGB uint8 array of shape (H, W, 3), got {dtype} with shape {shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{name}: empty image of shape {image.shape}")


def _resize_into(image: np.ndarray, out: np.ndarray, pre: Preprocessing) -> LetterboxInfo:
    """Letterbox `image` into the preallocated `out` (already filled with the pad value)."""
    info, new_h, new_w = letterbox_params(image.shape[0], image.shape[1], pre)
    resized = image
    if (new_h, new_w) != image.shape[:2]:
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out[info.pad_y:info.pad_y + new_h, info.pad_x:info.pad_x + new_w] = resized
    return info


def letterbox(image: np.ndarray, pre: Preprocessing) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize an RGB uint8 HWC image as `pre` says and pad it to `pre.image_size`."""
    check_image(image)
    out = np.full((*pre.image_size, 3), pre.pad_value, dtype=np.uint8)
    return out, _resize_into(image, out, pre)


def letterbox_batch(images: list[np.ndarray], pre: Preprocessing, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[LetterboxInfo]]:
    """Letterbox RGB uint8 images of any sizes into one [B, 3, H, W] tensor in [0, 1] on `device`."""
    device = torch.device(device)
    host = torch.full((len(images), *pre.image_size, 3), pre.pad_value, dtype=torch.uint8,
                      pin_memory=device.type == "cuda")
    buf = host.numpy()
    infos = []
    for i, image in enumerate(images):
        check_image(image, f"image {i}")
        infos.append(_resize_into(image, buf[i], pre))
    # Moved as uint8 and converted on the device: a quarter of the bytes of a float copy.
    x = host.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype).div_(255)
    return x.contiguous(), infos


def boxes_to_original(boxes: torch.Tensor, info: LetterboxInfo) -> torch.Tensor:
    """Map xyxy boxes [..., 4] from input pixels back to the original image, clipped to it."""
    pad = boxes.new_tensor([info.pad_x, info.pad_y, info.pad_x, info.pad_y])
    sx, sy = info.scale_xy
    hi = boxes.new_tensor([info.orig_w, info.orig_h, info.orig_w, info.orig_h])
    return ((boxes - pad) / boxes.new_tensor([sx, sy, sx, sy])).clamp_(min=0).minimum(hi)


def batch_boxes_to_original(boxes: list[torch.Tensor], infos: list[LetterboxInfo]) -> list[torch.Tensor]:
    """`boxes_to_original` for a batch: per-image [n_i, 4+] tensors (extra columns kept) in one set of tensor ops."""
    if not boxes:
        return []
    counts = [len(b) for b in boxes]
    flat = torch.cat(boxes)
    params = flat.new_tensor([[i.pad_x, i.pad_y, *i.scale_xy, i.orig_w, i.orig_h] for i in infos])
    rows = params.repeat_interleave(torch.tensor(counts, device=flat.device), dim=0)
    pad = rows[:, [0, 1, 0, 1]]
    scale = rows[:, [2, 3, 2, 3]]
    hi = rows[:, [4, 5, 4, 5]]
    xyxy = ((flat[:, :4] - pad) / scale).clamp_(min=0).minimum(hi)
    return list(torch.cat([xyxy, flat[:, 4:]], dim=1).split(counts))
