"""Image files, for every floor: which suffixes are images, listing a folder's, drawing a seeded subset of them, and
decoding one file to RGB. (The images of a data set's split, or of a folder, for any `--data`: data.splits.)"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from yolonas.errors import DataError, ImageError, InputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".jp2",
                            ".pbm", ".pgm", ".ppm", ".pnm"})


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 HWC, pixels as stored (EXIF orientation ignored, as the labels assume);
    ImageError (a DataError and an InputError) naming the file when it cannot."""
    # np.fromfile + imdecode also works for non-ASCII paths on every platform
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e.strerror or e})") from e
    return decode_image(data, str(path))


def decode_image(data: bytes | np.ndarray, name: str) -> np.ndarray:
    """An encoded image's bytes to RGB uint8 HWC, as `read_image` decodes files; ImageError naming `name` when they
    are not an image."""
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) if buffer.size else None
    if image is None:
        raise ImageError(f"{name}: cannot decode image (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under a folder, recursively, sorted (by suffix, in any case)."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def select_images(files: Sequence[str | Path], n: int, seed: int, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """`n` files drawn without replacement by `seed` (all when fewer), skipping `exclude`; same seed, same list."""
    if n < 1:
        raise InputError(f"the number of images must be at least 1, got {n}")
    skip = {Path(p) for p in exclude}
    pool = [Path(f) for f in files if Path(f) not in skip]
    if not pool:
        raise DataError("no images left to choose from (all are used for calibration)")
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return [pool[i] for i in sorted(order.tolist())]
