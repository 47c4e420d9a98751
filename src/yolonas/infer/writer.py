"""Writing predictions to a run folder: annotated images, annotated videos and one JSON of detections."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from yolonas.infer.detections import Detections
from yolonas.infer.draw import draw_detections
from yolonas.infer.sources import video_properties
from yolonas.infer.video import VideoSink


class PredictionWriter:
    """Collects (name, image, Detections) from `Predictor.stream` and writes them under `out_dir`.

    Images become `<out_dir>/<file name>`; frames of `clip.mp4` become `<out_dir>/clip.mp4` (annotated,
    at the source fps); `predictions.json` holds one entry per image or frame.
    """

    def __init__(self, out_dir: str | Path, save_images: bool = True, line_width: int = 2):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.save_images = save_images
        self.line_width = line_width
        self.entries: list[dict] = []
        self._videos: dict[str, VideoSink] = {}
        self._used: set[str] = set()

    def _unique(self, name: str) -> Path:
        stem, suffix = Path(name).stem, Path(name).suffix or ".jpg"
        candidate, n = f"{stem}{suffix}", 1
        while candidate in self._used:  # two inputs with the same file name from different folders
            n += 1
            candidate = f"{stem}_{n}{suffix}"
        self._used.add(candidate)
        return self.out_dir / candidate

    def add(self, name: str, image: np.ndarray, det: Detections) -> None:
        entry = det.to_json()
        entry["file"] = name
        self.entries.append(entry)
        if not self.save_images:
            return
        drawn = draw_detections(image, det, thickness=self.line_width)
        video, _, frame = name.rpartition("#")
        if video and frame.isdigit():
            sink = self._videos.get(video)
            if sink is None:
                sink = VideoSink(self._unique(Path(video).with_suffix(".mp4").name), video_properties(video)[0])
                self._videos[video] = sink
            sink.write(drawn)
        else:
            path = self._unique(Path(name).name if name else f"image{len(self.entries)}.jpg")
            cv2.imwrite(str(path), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))

    def close(self) -> Path:
        """Finish the videos and write predictions.json; returns its path."""
        for sink in self._videos.values():
            sink.close()
        path = self.out_dir / "predictions.json"
        path.write_text("[\n" + ",\n".join(json.dumps(e) for e in self.entries) + "\n]\n")
        return path

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
