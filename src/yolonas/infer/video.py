"""Writing annotated frames to a video file at the source's frame rate and size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolonas.errors import InputError


class VideoSink:
    """Write RGB frames to a video file (mp4v); the size is that of the first frame.

    Use as a context manager: `with VideoSink("out.mp4", fps) as sink: sink.write(frame)`.
    """

    def __init__(self, path: str | Path, fps: float):
        self.path = Path(path)
        # Some containers report 0 or NaN fps; 25 keeps the file playable rather than failing.
        self.fps = fps if fps and fps > 0 and np.isfinite(fps) else 25.0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame_rgb: np.ndarray) -> None:
        """Append one RGB uint8 frame; every frame must have the size of the first."""
        h, w = frame_rgb.shape[:2]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise InputError(f"{self.path}: cannot open a video writer (mp4v) for this file")
            self._size = (w, h)
        elif (w, h) != self._size:
            vw, vh = self._size
            raise InputError(f"{self.path}: frame {self.frames} is {w}x{h}, the video is {vw}x{vh}")
        self._writer.write(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
