"""Dynamic batching: a bounded queue of decoded images and ONE worker thread that owns the Predictor.

The worker opens the model itself, so no other thread ever touches it. It takes what is queued (up to `max_batch`);
while more images are still being decoded by request handlers, it waits for them up to `max_wait_ms`, and it never
waits when nothing is on its way, so a lone request pays no batching delay. Images whose requests asked for
different options (thresholds, tiles) run as separate batches, each with one setting. A full queue refuses at once
(`QueueFull`: the server answers 503) instead of piling up; a job whose request timed out is dropped unrun.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from yolonas.infer.detections import Detections
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.predictor import Predictor
from yolonas.infer.tiling import TileConfig

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue holds `max_queue` images already: come back later."""


class JobExpired(TimeoutError):
    """The request's deadline passed before the worker reached its image."""


@dataclass(frozen=True)
class RunOptions:
    """What a request may choose that changes how its batch runs; images batch together only when equal."""

    nms: NMSConfig
    tiles: TileConfig | None = None


@dataclass(frozen=True)
class Done:
    """One image's answer: its detections and where its time went."""

    detections: Detections
    queue_ms: float
    inference_ms: float
    batch_size: int


@dataclass(frozen=True)
class ModelInfo:
    """What the worker's model is, read once by the worker after opening it."""

    class_names: list[str]
    image_size: tuple[int, int]
    precision: str
    runtime: str
    device: str
    has_nms: bool

    @classmethod
    def of(cls, predictor: Predictor) -> ModelInfo:
        backend = predictor.backend
        return cls(list(predictor.class_names), tuple(predictor.preprocessing.image_size), backend.precision,
                   backend.runtime, str(backend.device), bool(backend.has_nms))


@dataclass
class _Job:
    image: np.ndarray
    options: RunOptions
    name: str | None
    deadline: float  # time.monotonic()
    queued: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


@dataclass
class _Ticket:
    """An image a handler is decoding; `submitted` once it is queued (or refused)."""

    submitted: bool = False


BatchObserver = Callable[[int, float], None]  # (images, seconds) of each batch run


class Batcher:
    """Collects images from many request handlers into batches for one inference worker (see the module doc)."""

    def __init__(self, open_predictor: Callable[[], Predictor], *, max_batch: int = 8, max_wait_ms: float = 5.0,
                 max_queue: int = 64, on_batch: BatchObserver | None = None):
        self._open = open_predictor
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1e3, max_queue
        self._on_batch = on_batch or (lambda n, s: None)
        self._jobs: collections.deque[_Job] = collections.deque()
        self._incoming = 0  # images being decoded by handlers: they will be submitted soon
        self._cond = threading.Condition()
        self._stopping = False
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="yolonas-inference", daemon=True)
        self.info: ModelInfo | None = None

    # ------------------------------------------------------------------------------------------ life cycle

    def start(self) -> ModelInfo:
        """Start the worker and wait until it has opened the model; its error, if opening fails."""
        self._thread.start()
        self._loaded.wait()
        if self._load_error is not None:
            self._thread.join()
            raise self._load_error
        return self.info

    def stop(self, timeout: float = 10.0) -> None:
        """Let the worker finish its batch and end; queued jobs are answered with JobExpired."""
        with self._cond:
            self._stopping = True
            left, self._jobs = list(self._jobs), collections.deque()
            self._cond.notify_all()
        for job in left:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(JobExpired("the server is shutting down"))
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the worker runs with its model open."""
        return self._thread.is_alive() and self.info is not None

    @property
    def depth(self) -> int:
        """Images waiting for the worker."""
        return len(self._jobs)

    def has_room(self) -> bool:
        """True when the queue would take one more image now."""
        return len(self._jobs) < self.max_queue

    # ------------------------------------------------------------------------------------------ handlers' side

    @contextmanager
    def incoming(self) -> Iterator[_Ticket]:
        """Around a handler's decoding: tells the worker an image is on its way, so it may wait for it.

        Submit with the ticket it yields: the image stops being "on its way" in the same step that queues it (else
        the worker would wait `max_wait_ms` for the very image it holds).
        """
        ticket = _Ticket()
        with self._cond:
            self._incoming += 1
        try:
            yield ticket
        finally:
            with self._cond:
                if not ticket.submitted:
                    self._incoming -= 1
                    self._cond.notify_all()

    def submit(self, image: np.ndarray, options: RunOptions, timeout_s: float, name: str | None = None,
               ticket: _Ticket | None = None) -> Future:
        """Queue one RGB image; a Future of its `Done`. QueueFull when `max_queue` images wait already."""
        job = _Job(image, options, name, time.monotonic() + timeout_s)
        with self._cond:
            if ticket is not None and not ticket.submitted:
                ticket.submitted = True
                self._incoming -= 1
                self._cond.notify_all()
            if self._stopping:
                raise QueueFull("the server is shutting down")
            if len(self._jobs) >= self.max_queue:
                raise QueueFull(f"{len(self._jobs)} images are waiting already (--max-queue {self.max_queue})")
            self._jobs.append(job)
            self._cond.notify_all()
        return job.future

    # ------------------------------------------------------------------------------------------ the worker

    def _work(self) -> None:
        try:
            predictor = self._open()
            self.info = ModelInfo.of(predictor)
        except BaseException as e:  # noqa: BLE001 - handed to start(), which raises it in the caller's thread
            self._load_error = e
            return
        finally:
            self._loaded.set()
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            self._run(predictor, jobs)

    def _collect(self) -> list[_Job] | None:
        """The next batch: what is queued, plus what arrives while images are still being decoded (up to
        `max_wait`); None once stopping."""
        with self._cond:
            self._cond.wait_for(lambda: self._jobs or self._stopping)
            if self._stopping:
                return None
            end = time.monotonic() + self.max_wait
            while len(self._jobs) < self.max_batch and self._incoming > 0 and not self._stopping:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._jobs.popleft() for _ in range(min(self.max_batch, len(self._jobs)))]

    def _run(self, predictor: Predictor, jobs: list[_Job]) -> None:
        """Run the live jobs, one batch per distinct option set, and answer each."""
        now = time.monotonic()
        groups: dict[RunOptions, list[_Job]] = {}
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue  # its request gave up waiting
            if job.deadline < now:
                job.future.set_exception(JobExpired("timed out in the queue"))
                continue
            groups.setdefault(job.options, []).append(job)
        for options, group in groups.items():
            self._run_group(predictor, options, group)

    def _run_group(self, predictor: Predictor, options: RunOptions, group: list[_Job]) -> None:
        start = time.monotonic()
        try:
            dets = predictor.predict_arrays([j.image for j in group], [j.name for j in group], nms=options.nms,
                                            tiles=options.tiles)
        except Exception as e:  # noqa: BLE001 - one bad batch must not end the worker: its requests get the error
            log.warning("inference failed on a batch of %d: %s", len(group), e)
            for job in group:
                job.future.set_exception(e)
            return
        seconds = time.monotonic() - start
        self._on_batch(len(group), seconds)
        for job, det in zip(group, dets):
            job.future.set_result(Done(det, (start - job.queued) * 1e3, seconds * 1e3, len(group)))
