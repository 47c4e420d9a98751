"""Label and image checks done once on open, and the one summary report of what they found."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

# Each fault says what was found and what was done about it.
UNPARSABLE = "line or annotation that does not parse (skipped)"
BAD_CLASS = "class id outside the class list (skipped)"
OUTSIDE = "box partly outside the image (clipped)"
DEGENERATE = "degenerate box, zero or negative width or height (dropped)"
MISSING_IMAGE = "missing image (image dropped)"
CORRUPT_IMAGE = "corrupt or unreadable image (image dropped)"
SIZE_MISMATCH = "image size differs from the annotation file (image dropped)"
UNKNOWN_IMAGE = "annotation of an image not in the file (skipped)"
NO_LABEL_FILE = "image without a label file (kept as a background image)"

# Background images are normal in detection data sets: counted and listed, but not a reason to warn.
INFO_ONLY = frozenset({NO_LABEL_FILE})

log = logging.getLogger(__name__)

OUTSIDE_TOLERANCE = 1.0  # pixels; rounding in exported labels overshoots the border by far less than this


@dataclass
class LabelReport:
    """What the checks found in one data set: per fault, where (file, file:line or annotation id)."""

    source: str
    found: dict[str, list[str]] = field(default_factory=dict)

    def add(self, fault: str, where: str) -> None:
        self.found.setdefault(fault, []).append(where)

    def count(self, fault: str) -> int:
        return len(self.found.get(fault, ()))

    @property
    def counts(self) -> dict[str, int]:
        return {fault: len(where) for fault, where in self.found.items()}

    @property
    def has_faults(self) -> bool:
        return any(fault not in INFO_ONLY for fault in self.found)

    def summary(self, max_names: int = 5) -> str:
        """One block: a line per fault with its count and the first few places."""
        if not self.found:
            return f"{self.source}: labels checked, no faults"
        lines = [f"{self.source}: label check found"]
        for fault, where in self.found.items():
            shown = ", ".join(where[:max_names]) + (f", ... {len(where) - max_names} more" if len(where) > max_names
                                                    else "")
            lines.append(f"  {len(where):>6} x {fault}: {shown}")
        return "\n".join(lines)

    def warn(self) -> None:
        """Log the summary as one warning when anything was skipped, clipped or dropped."""
        if self.has_faults:
            log.warning(self.summary())


def image_size(path: Path) -> tuple[int, int] | str:
    """(height, width) from the file header without decoding the pixels, or the fault when it is missing/corrupt."""
    try:
        with Image.open(path) as im:
            width, height, fmt = im.width, im.height, im.format
            im.verify()  # cheap structural check (PNG chunk CRCs, headers); full decode would be far slower
        if fmt == "JPEG" and _truncated_jpeg(path):
            return CORRUPT_IMAGE
    except FileNotFoundError:
        return MISSING_IMAGE
    except Exception:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, struct.error)
        return CORRUPT_IMAGE
    if width <= 0 or height <= 0:
        return CORRUPT_IMAGE
    return height, width


def _truncated_jpeg(path: Path) -> bool:
    """True for a JPEG cut short: its header passes `verify`, so look for the end-of-image marker near the end,
    and only where it is missing decode the file fully to decide (some writers append data after it)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 4096))
        if b"\xff\xd9" in f.read():
            return False
    try:
        with Image.open(path) as im:
            im.load()  # raises on a truncated file (PIL's LOAD_TRUNCATED_IMAGES is off)
    except Exception:  # noqa: BLE001 - any decode failure means the same: the file is cut short or broken
        return True
    return False


def clip_boxes(boxes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check boxes [n, 4] xyxy pixels against their image (height, width) [n, 2].

    Returns (boxes clipped to the image where they reach out by more than the tolerance, outside mask, degenerate
    mask). Boxes within the tolerance are left exactly as given, so ground truth compares to the source unchanged.
    """
    h = sizes[:, 0].astype(np.float64)
    w = sizes[:, 1].astype(np.float64)
    b = boxes.astype(np.float64)
    outside = ((b[:, 0] < -OUTSIDE_TOLERANCE) | (b[:, 1] < -OUTSIDE_TOLERANCE)
               | (b[:, 2] > w + OUTSIDE_TOLERANCE) | (b[:, 3] > h + OUTSIDE_TOLERANCE))
    clipped = np.stack([b[:, 0].clip(0, w), b[:, 1].clip(0, h), b[:, 2].clip(0, w), b[:, 3].clip(0, h)], axis=1)
    b[outside] = clipped[outside]
    degenerate = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    return b.astype(np.float32), outside & ~degenerate, degenerate
