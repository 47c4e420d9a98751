"""Inference's letterbox: `yolonas.preprocess`'s rule on checked images, batched into a tensor; boxes mapped back."""

from __future__ import annotations

import numpy as np
import torch

from yolonas.errors import InputError
from yolonas.preprocess import LetterboxInfo, Preprocessing, letterbox_into

# The dtypes converted with numpy on the CPU: its true division rounds as torch's, so the values are the same bits.
_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def check_image(image: np.ndarray, name: str = "image") -> None:
    """Raise `InputError` unless `image` is an RGB uint8 HWC array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise InputError(f"{name}: expected an RGB uint8 array of shape (H, W, 3), got {dtype} with shape {shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{name}: empty image of shape {image.shape}")


def _resize_into(image: np.ndarray, out: np.ndarray, pre: Preprocessing) -> LetterboxInfo:
    """Letterbox `image` into the preallocated `out` [H, W, 3] as `pre` says, writing all of it."""
    return letterbox_into(image, out, pre.longest_side, pre.pad, pre.pad_value)


def letterbox(image: np.ndarray, pre: Preprocessing) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize an RGB uint8 HWC image as `pre` says and pad it to `pre.image_size`."""
    check_image(image)
    out = np.empty((*pre.image_size, 3), dtype=np.uint8)
    return out, _resize_into(image, out, pre)


def letterbox_batch(images: list[np.ndarray], pre: Preprocessing, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32, memory_format: torch.memory_format = torch.contiguous_format
                    ) -> tuple[torch.Tensor, list[LetterboxInfo]]:
    """Letterbox RGB uint8 images of any sizes into one [B, 3, H, W] tensor in [0, 1] on `device`.

    The values are `uint8.to(dtype) / 255`. `memory_format=torch.channels_last` lays the same tensor out as
    [B, H, W, 3] in memory, which spares a channels-last model a copy of its input.
    """
    device = torch.device(device)
    host = torch.empty((len(images), *pre.image_size, 3), dtype=torch.uint8, pin_memory=device.type == "cuda")
    buf = host.numpy()
    infos = []
    for i, image in enumerate(images):
        check_image(image, f"image {i}")
        infos.append(_resize_into(image, buf[i], pre))
    if device.type == "cpu" and dtype in _NUMPY_FLOATS:
        return _unit_float(buf, _NUMPY_FLOATS[dtype], memory_format), infos
    # Moved as uint8 and converted on the device: a quarter of the bytes of a float copy.
    x = host.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype).div_(255)
    return x.contiguous(memory_format=memory_format), infos


def _unit_float(buf: np.ndarray, dtype: type[np.floating], memory_format: torch.memory_format) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> [B, 3, H, W] in [0, 1] on the CPU, with numpy (one thread, no copy into torch)."""
    # torch's float conversion of the channels-last view then a contiguous copy took 12-30 ms at 640 px on
    # this busy 2-core CPU (its OpenMP team waits for a core); numpy's byte transpose, cast and divide ~1 ms.
    channels_last = memory_format == torch.channels_last
    planes = buf if channels_last else np.ascontiguousarray(buf.transpose(0, 3, 1, 2))
    x = planes.astype(dtype)
    x /= dtype(255)  # a division, as torch's: multiplying by 1 / 255 rounds about half of the 256 values differently
    x = torch.from_numpy(x)
    return x.permute(0, 3, 1, 2) if channels_last else x


def boxes_to_original(boxes: torch.Tensor, info: LetterboxInfo) -> torch.Tensor:
    """Map xyxy boxes [..., 4] from input pixels back to the original image, clipped to it."""
    row = boxes.new_tensor(_back_row(info))
    return ((boxes - row[:4]) / row[4:8]).clamp_(min=0).minimum(row[8:])


def batch_boxes_to_original(boxes: list[torch.Tensor], infos: list[LetterboxInfo]) -> list[torch.Tensor]:
    """`boxes_to_original` for a batch: per-image [n_i, 4+] tensors (extra columns kept) in one set of tensor ops."""
    if not boxes:
        return []
    counts = [len(b) for b in boxes]
    flat = torch.cat(boxes)
    # One row per box, repeated with numpy: torch's repeat_interleave splits even 8 images over an OpenMP team,
    # which waited ~8 ms for a busy core on this CPU.
    rows = np.repeat(np.array([_back_row(i) for i in infos]), counts, axis=0)
    rows = torch.from_numpy(rows).to(flat.device, flat.dtype)
    xyxy = ((flat[:, :4] - rows[:, :4]) / rows[:, 4:8]).clamp_(min=0).minimum(rows[:, 8:])
    return list(torch.cat([xyxy, flat[:, 4:]], dim=1).split(counts))


def _back_row(info: LetterboxInfo) -> list[float]:
    """Per xyxy column: the padding, the scale and the original size, for original = (input - pad) / scale."""
    sx, sy = info.scale_xy
    return [info.pad_x, info.pad_y, info.pad_x, info.pad_y, sx, sy, sx, sy,
            info.orig_w, info.orig_h, info.orig_w, info.orig_h]
