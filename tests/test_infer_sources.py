"""Sources: decoding runs ahead of the consumer (stills and video frames), in order, skips counted once."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from yolonas.errors import InputError
from yolonas.infer import ImageSource, Predictor, sources
from yolonas.preprocess import Preprocessing

# Long enough never to run out in a pipeline that overlaps; a serial one waits it out and fails.
WAIT_S = 5.0


def _backend_waiting_for(ready: list[threading.Event], batch_size: int, seen: list[bool]):
    """A backend that, on batch k, waits for the first input of batch k + 1 to be decoded and records whether it was.

    The wait happens inside the backend call, so the input can only be ready if decoding runs beside the network.
    """
    def backend(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        following = (len(seen) + 1) * batch_size
        seen.append(following >= len(ready) or ready[following].wait(WAIT_S))
        b = x.shape[0]
        return torch.tensor([[1.0, 1.0, 9.0, 9.0]]).expand(b, 1, 4), torch.full((b, 1, 1), 0.9)
    return backend


def _predictor(backend, batch_size: int) -> Predictor:
    return Predictor(backend, preprocessing=Preprocessing(image_size=(32, 32)), class_names=["a"],
                     batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_images_decode_while_the_backend_runs(tmp_path, monkeypatch, batch_size):
    paths = [tmp_path / f"{i:02d}.jpg" for i in range(7)]
    for p in paths:
        p.write_bytes(b"")
    decoded = {str(p): threading.Event() for p in paths}

    def read(path) -> np.ndarray:
        decoded[str(path)].set()
        return np.full((8, 8, 3), int(path.stem), np.uint8)

    monkeypatch.setattr(sources, "read_image", read)
    seen: list[bool] = []
    predictor = _predictor(_backend_waiting_for(list(decoded.values()), batch_size, seen), batch_size)
    dets = predictor.predict(tmp_path)
    assert [d.path for d in dets] == [str(p) for p in paths]
    assert len(seen) == -(-len(paths) // batch_size) and all(seen)


class FakeCapture:
    """cv2.VideoCapture's interface over `frames` numbered frames; records what the reader did and when."""

    def __init__(self, frames: int, opened: bool = True, fail_at: int | None = None):
        self.frames, self.opened, self.fail_at = frames, opened, fail_at
        self.read_events = [threading.Event() for _ in range(frames)]
        self.next = 0
        self.released = False
        self.reads_after_release = 0

    def __call__(self, path: str) -> FakeCapture:  # stands in for the cv2.VideoCapture class
        return self

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads_after_release += self.released
        if self.next == self.fail_at:
            raise RuntimeError(f"decoder failed at frame {self.next}")
        if self.next >= self.frames:
            return False, None
        frame = np.full((8, 8, 3), self.next, np.uint8)
        self.read_events[self.next].set()
        self.next += 1
        return True, frame

    def release(self) -> None:
        self.released = True


def _video(tmp_path, monkeypatch, capture: FakeCapture):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"")
    monkeypatch.setattr(sources.cv2, "VideoCapture", capture)
    return path


@pytest.mark.parametrize("batch_size", [1, 2])
def test_video_frames_decode_while_the_backend_runs(tmp_path, monkeypatch, batch_size):
    capture = FakeCapture(frames=5)
    path = _video(tmp_path, monkeypatch, capture)
    seen: list[bool] = []
    predictor = _predictor(_backend_waiting_for(capture.read_events, batch_size, seen), batch_size)
    names = [name for name, _, _ in predictor.stream(path)]
    assert names == [f"{path}#{i}" for i in range(5)]
    assert all(seen) and capture.released and capture.reads_after_release == 0


def test_video_frames_in_order_with_their_pixels(tmp_path, monkeypatch):
    path = _video(tmp_path, monkeypatch, FakeCapture(frames=9))
    items = list(ImageSource(path, prefetch=3))
    assert [name for name, _ in items] == [f"{path}#{i}" for i in range(9)]
    assert [int(image[0, 0, 0]) for _, image in items] == list(range(9))


def test_stopping_early_waits_for_the_reader_before_releasing(tmp_path, monkeypatch):
    capture = FakeCapture(frames=50)
    path = _video(tmp_path, monkeypatch, capture)
    frames = iter(ImageSource(path, prefetch=4))
    next(frames), next(frames)
    frames.close()
    assert capture.released and capture.reads_after_release == 0 and capture.next < 50


@pytest.mark.parametrize("opened, reason", [(False, "cannot open the video"), (True, "no readable frames")])
def test_unreadable_video_is_skipped_once(tmp_path, monkeypatch, opened, reason):
    path = _video(tmp_path, monkeypatch, FakeCapture(frames=0, opened=opened))
    src = ImageSource([path, np.zeros((4, 4, 3), np.uint8)])
    assert [name for name, _ in src] == ["image_1"]
    assert len(src.skipped) == 1 and src.skipped[0][0] == str(path) and reason in src.skipped[0][1]


def test_decoder_error_in_the_reader_reaches_the_consumer(tmp_path, monkeypatch):
    path = _video(tmp_path, monkeypatch, FakeCapture(frames=5, fail_at=3))
    got = []
    with pytest.raises(RuntimeError, match="frame 3"):
        for name, _ in ImageSource(path, prefetch=2):
            got.append(name)
    assert got == [f"{path}#{i}" for i in range(3)]


@pytest.mark.parametrize("prefetch", [0, 1, 3, 16])
def test_order_kept_and_each_bad_file_skipped_once(tmp_path, monkeypatch, prefetch):
    names = [f"{i:02d}{'_bad' if i % 3 == 1 else ''}.jpg" for i in range(11)] + ["notes.txt"]
    for n in names:
        (tmp_path / n).write_bytes(b"")

    def read(path) -> np.ndarray:
        if "bad" in path.name:
            raise InputError(f"{path}: cannot decode the image")
        return np.zeros((4, 4, 3), np.uint8)

    monkeypatch.setattr(sources, "read_image", read)
    src = ImageSource(tmp_path, prefetch=prefetch)
    for _ in range(2):  # a second pass starts afresh
        got = [name for name, _ in src]
        assert got == [str(tmp_path / n) for n in names if "bad" not in n and n.endswith(".jpg")]
        assert sorted(name for name, _ in src.skipped) == sorted(str(tmp_path / n) for n in names
                                                                  if "bad" in n or n.endswith(".txt"))
