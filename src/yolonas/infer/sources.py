"""Inputs to predict: image files, folders, globs, videos, arrays and PIL images, read lazily as RGB uint8."""

from __future__ import annotations

import glob
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from yolonas.data.images import IMAGE_SUFFIXES, read_image
from yolonas.errors import InputError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


def is_video(path: str | Path) -> bool:
    """True when the file's suffix is a video type."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def video_properties(path: str | Path) -> tuple[float, int, int, int]:
    """(fps, width, height, frame count) of a video file; the count is OpenCV's estimate."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(f"{path}: cannot open the video (corrupt file or unsupported codec)")
        return (cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        cap.release()


def as_rgb(image, name: str = "image") -> np.ndarray:
    """A numpy array (RGB, or grayscale/RGBA promoted to RGB) or a PIL image as an RGB uint8 HWC array."""
    if not isinstance(image, np.ndarray):
        image = np.asarray(image.convert("RGB"))  # a PIL image
    if image.dtype != np.uint8:
        raise InputError(f"{name}: expected a uint8 array, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{name}: expected an RGB array of shape (H, W, 3), got shape {image.shape}")
    return np.ascontiguousarray(image)


def _read_frame(cap: cv2.VideoCapture) -> np.ndarray | None:
    """The next frame of `cap` as RGB, or None at the end (OpenCV releases the GIL while it decodes)."""
    ok, frame = cap.read()
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if ok else None


def _is_pil(obj) -> bool:
    return hasattr(obj, "convert") and hasattr(obj, "size") and hasattr(obj, "mode")


class ImageSource:
    """Iterate over any supported input, yielding `(name, rgb_uint8_array)`; files that fail are skipped and listed.

    A source is a path to an image, a folder (its files sorted, not recursive), a glob pattern, a video file
    (frame by frame, named "clip.mp4#<frame>"), a numpy RGB array, a PIL image, or a list of any of these.
    Paths that do not exist raise `InputError` when the source is made; files that cannot be decoded are
    warned about, recorded in `skipped` as (file, reason), and left out.
    """

    def __init__(self, source, prefetch: int = 4):
        self.prefetch = prefetch
        self.skipped: list[tuple[str, str]] = []
        if isinstance(source, (str, Path, np.ndarray, list, tuple)) or _is_pil(source):
            self._items = list(self._expand(source))  # checked now: a missing path fails before any work
        else:
            self._items = source  # a generator (of frames, say) stays lazy, so it is never held in memory

    def _expand(self, source) -> Iterator:
        """Flatten the source into a list of Paths, arrays and PIL images, checking that every path exists."""
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.is_dir():
                # Hidden files (.DS_Store, editor swap files) are not inputs; every other file is tried.
                files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
                if not files:
                    raise InputError(f"{source}: the folder is empty; give a folder with images or videos")
                yield from files
            elif path.exists():
                yield path
            elif any(c in str(source) for c in "*?["):
                matches = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
                if not matches:
                    raise InputError(f"{source}: no files match this pattern")
                yield from matches
            else:
                raise InputError(f"{source}: no such file or folder")
        elif isinstance(source, np.ndarray) or _is_pil(source):
            yield source
        elif isinstance(source, Iterable):
            for s in source:
                yield from self._expand(s)
        else:
            raise InputError(f"unsupported source type {type(source).__name__}: give a path, folder, glob, video, "
                             "numpy array, PIL image or a list of these")

    def _skip(self, name: str, reason: str) -> None:
        log.warning("skipped %s: %s", name, reason)
        self.skipped.append((name, reason))

    def _load(self, item, index: int) -> tuple[str, np.ndarray] | tuple[str, InputError]:
        """Decode one still input; runs in a worker thread (OpenCV releases the GIL while decoding)."""
        if isinstance(item, Path):
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                return str(item), InputError(f"{item}: not an image or video file (suffix {item.suffix!r})")
            try:
                return str(item), read_image(item)
            except InputError as e:
                return str(item), e
        name = getattr(item, "filename", None) or f"image_{index}"  # PIL keeps the file it was opened from
        return name, as_rgb(item, name)

    def _frames(self, path: Path) -> Iterator[tuple[str, np.ndarray]]:
        """Yield a video's frames in order, decoding up to `prefetch` frames ahead in a reader thread."""
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                self._skip(str(path), "cannot open the video (corrupt file or unsupported codec)")
                return
            i = 0
            # One thread: a capture's frames are read one after the other, in order, while the consumer works.
            reader = ThreadPoolExecutor(1)
            try:
                pending = deque(reader.submit(_read_frame, cap) for _ in range(max(self.prefetch, 1)))
                while (frame := pending.popleft().result()) is not None:
                    pending.append(reader.submit(_read_frame, cap))
                    yield f"{path}#{i}", frame
                    i += 1
            finally:
                reader.shutdown(wait=True, cancel_futures=True)  # before the capture is released
            if i == 0:
                self._skip(str(path), "the video has no readable frames")
        finally:
            cap.release()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """Yield (name, image) in order, decoding up to `prefetch` images ahead in a thread pool."""
        self.skipped = []
        # Decoders beyond the cores only wait; the read-ahead depth is `prefetch` whatever the thread count.
        with ThreadPoolExecutor(max(1, min(self.prefetch, os.cpu_count() or 1))) as pool:
            pending: deque = deque()
            items = self._items if isinstance(self._items, list) else self._expand(self._items)
            for index, item in enumerate(items):
                if isinstance(item, Path) and is_video(item):
                    yield from self._drain(pending)
                    yield from self._frames(item)
                    continue
                pending.append(pool.submit(self._load, item, index))
                if len(pending) > self.prefetch:
                    yield from self._drain(pending, keep=self.prefetch)
            yield from self._drain(pending)

    def _drain(self, pending: deque, keep: int = 0) -> Iterator[tuple[str, np.ndarray]]:
        while len(pending) > keep:
            name, result = pending.popleft().result()
            if isinstance(result, InputError):
                self._skip(name, str(result).removeprefix(f"{name}: "))
            else:
                yield name, result
