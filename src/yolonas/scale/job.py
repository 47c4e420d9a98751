"""A cluster job: image files -> Ray Data (bytes) -> `map_batches` over a pool of `DetectActor`s -> result rows,
written by this process as numbered Parquet or JSONL files, with a progress bar and a summary.

Exactly once, and what gives it:
- An actor that dies (killed, out of memory, its node lost) is started again by Ray (`max_restarts=-1`), and the
  batch it held runs again on the new one (`max_task_retries=3`, so a batch that kills its actor each time fails
  the job after three tries instead of looping). Reading tasks are Ray tasks with Ray's default `max_retries=3`;
  they only read bytes, so running one again is harmless.
- The output blocks of the map reach this process once: Ray names a task's outputs by task and position, so those
  a retried batch yields again are dropped, and the batch gives the same rows each time (same bytes, same model).
- Only this process writes, each file whole (temp file, then rename). A resumed job (`skip_done`) reads the
  paths of the complete files and runs only the others; the input list holds each file once.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import ray
import ray.data
from ray.util.annotations import RayDeprecationWarning
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from yolonas.arch.spec import BUILTIN
from yolonas.errors import CheckpointError, InputError, YolonasError
from yolonas.scale.actor import DetectActor, ModelFiles, PredictOptions, check_model
from yolonas.scale.cluster import ActorPlan, plan_actors, quiet_ray_data, ray_session
from yolonas.scale.inputs import InputPlan, plan_inputs
from yolonas.scale.rows import (
    PART_PREFIX,
    check_format,
    count_errors,
    done_paths,
    error_table,
    part_files,
    path_key,
    write_part,
)

log = logging.getLogger(__name__)

TASK_RETRIES = 3  # runs of a batch on restarted actors before the job fails
FILES_PER_READ = 64  # files per Ray read task: bounds the bytes one block holds


@dataclass
class JobConfig:
    """A cluster job: the model (a checkpoint, published name or exported .onnx/.xml, e.g. an INT8 OpenVINO IR),
    where the rows go, the Ray cluster (None: a local Ray), the actor pool, and how each actor predicts."""

    model: str
    output: str | Path
    fmt: str = "parquet"
    address: str | None = None
    actors: int | None = None  # default: one per GPU, or the CPUs shared out (see `plan_actors`)
    threads: int | None = None  # per CPU actor
    predict: PredictOptions = field(default_factory=PredictOptions)
    skip_done: bool = False  # resume: run only the images the output folder has no row for
    rows_per_file: int = 10_000  # rows held before a file is written (a killed job loses at most these, or
    flush_every_s: float = 60.0  # the rows of this long, whichever comes first)
    progress: bool = False  # a progress bar on stderr (on a terminal)


@dataclass
class JobSummary:
    """What a job did: images listed, skipped as done, detected and failed in this run, its time and pool."""

    output: str
    listed: int | None
    already_done: int
    done: int
    failed: int
    seconds: float
    pool: str
    files: int

    @property
    def images_per_s(self) -> float:
        """Images (detected or failed) per second of this run's pipeline, Ray's start-up not counted."""
        return (self.done + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """The closing line of `yolonas predict --engine ray`."""
        resumed = f", {self.already_done} already done" if self.already_done else ""
        return (f"predict (ray): {self.done} images done, {self.failed} failed{resumed}; {self.images_per_s:.1f} "
                f"images/s over {self.seconds:.1f} s on {self.pool} -> {self.output} ({self.files} files)")

    def to_json(self) -> dict:
        """A JSON-ready dict of the summary."""
        return {**dataclasses.asdict(self), "images_per_s": round(self.images_per_s, 3)}


class PartWriter:
    """Buffers result rows and writes them as numbered files `part-<run>-<n>.<fmt>` of `rows_per_file` rows, or of
    the rows that came in `flush_every_s` seconds."""

    def __init__(self, folder: Path, fmt: str, rows_per_file: int, flush_every_s: float = 60.0):
        self.folder, self.fmt, self.rows_per_file, self.flush_every_s = folder, fmt, rows_per_file, flush_every_s
        self.last_flush = time.monotonic()
        # Unique per run (two runs in one second too), and a resumed job's files sort after the first one's.
        self.run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.pending: list[pa.Table] = []
        self.buffered = self.rows = self.failed = self.files = 0

    def add(self, table: pa.Table) -> None:
        """Take one block of rows; write a file when enough are held."""
        self.pending.append(table)
        self.buffered += table.num_rows
        self.rows += table.num_rows
        self.failed += count_errors(table)
        if self.buffered >= self.rows_per_file or time.monotonic() - self.last_flush > self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Write what is held (every held row is complete, so this is right even when the job stops early)."""
        if not self.buffered:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{PART_PREFIX}{self.run}-{self.files:06d}.{self.fmt}"
        write_part(pa.concat_tables(self.pending), self.folder / name, self.fmt)
        self.pending, self.buffered, self.files = [], 0, self.files + 1
        self.last_flush = time.monotonic()


def _check(cfg: JobConfig) -> set[str]:
    """Refuse a job that cannot run, before Ray starts; the path keys already done when resuming."""
    check_format(cfg.fmt)
    if cfg.rows_per_file < 1 or cfg.predict.batch < 1:
        raise InputError(f"rows per file {cfg.rows_per_file}, --batch {cfg.predict.batch}: give at least 1")
    if not Path(cfg.model).exists() and str(cfg.model) not in BUILTIN:
        raise CheckpointError(f"{cfg.model}: no such model file, and not a published model name")
    check_model(str(cfg.model), cfg.predict)
    existing = part_files(cfg.output, cfg.fmt)
    if existing and not cfg.skip_done:
        raise InputError(f"{cfg.output} already holds {len(existing)} result files: pass --skip-done to resume "
                         "that job, or give a new --output")
    return done_paths(cfg.output, cfg.fmt) if cfg.skip_done else set()


def _dataset(source, inputs: InputPlan | None, done: set[str], pool: ActorPlan) -> ray.data.Dataset:
    """(bytes, path) rows: the planned files read by Ray Data, or the caller's Dataset minus the done paths."""
    if inputs is None:
        return source.filter(lambda row: path_key(row["path"]) not in done) if done else source
    # Enough blocks that every actor has work from the start (an actor's task takes whole blocks), none larger
    # than FILES_PER_READ files. Reading only moves bytes: it reserves no CPU, so the actors can hold every CPU.
    n = len(inputs.paths)
    blocks = max(-(-n // FILES_PER_READ), min(n, 4 * pool.actors))
    return ray.data.read_binary_files(inputs.paths, include_paths=True, override_num_blocks=blocks, num_cpus=0,
                                      concurrency=min(blocks, max(2, pool.actors)))


def _detections(ds: ray.data.Dataset, cfg: JobConfig, pool: ActorPlan) -> ray.data.Dataset:
    """The map over the actor pool, with the restart and retry settings the exactly-once output rests on."""
    options = dataclasses.replace(cfg.predict, threads=pool.threads,
                                  device="cuda" if pool.gpus else cfg.predict.device)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates free remote args for the named ones, but names none for restarts and retries yet.
        warnings.simplefilter("ignore", RayDeprecationWarning)
        return ds.map_batches(DetectActor, fn_constructor_args=(str(cfg.model), ModelFiles.of(cfg.model), options),
                              batch_size=cfg.predict.batch, batch_format="numpy",
                              compute=ray.data.ActorPoolStrategy(size=pool.actors), num_cpus=pool.threads,
                              num_gpus=pool.gpus, max_restarts=-1, max_task_retries=TASK_RETRIES)


def _progress_bar(enabled: bool) -> Progress:
    """The job's bar on stderr: images, rate, time, failures; drawn only on a terminal."""
    return Progress(TextColumn("predict (ray)"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(), TextColumn("{task.fields[failed]}"), console=Console(stderr=True),
                    transient=True, disable=not (enabled and sys.stderr.isatty()))


def _consume(results: ray.data.Dataset, writer: PartWriter, total: int | None, cfg: JobConfig,
             on_progress: Callable[[int, int], None] | None) -> None:
    """Write the result blocks as they arrive, advancing the bar; `on_progress(rows, failed)` after each block."""
    start = time.perf_counter()
    with _progress_bar(cfg.progress) as bar:
        task = bar.add_task("", total=total, rate="", failed="")
        for block in results.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(block)
            rate = writer.rows / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=writer.rows, rate=f"{rate:.1f} img/s", failed=f"{writer.failed} failed")
            if on_progress is not None:
                on_progress(writer.rows, writer.failed)


def run_job(source, cfg: JobConfig, on_progress: Callable[[int, int], None] | None = None) -> JobSummary:
    """Detect objects in every image of `source` on Ray and write one row per image to `cfg.output`.

    `source`: a folder (recursively), a glob, a text file of paths or URIs, a URI folder, one image, or a
    `ray.data.Dataset` of {"bytes", "path"} rows (`read_binary_files(..., include_paths=True)`). An image that
    cannot be read or decoded is an error row; the job goes on. See the module's notes for exactly-once.
    """
    done = _check(cfg)
    inputs = None if isinstance(source, ray.data.Dataset) else plan_inputs(source, done)
    writer = PartWriter(Path(cfg.output), cfg.fmt, cfg.rows_per_file, cfg.flush_every_s)
    with ray_session(cfg.address), quiet_ray_data():
        pool = plan_actors(cfg.predict.device, cfg.actors, cfg.threads)
        log.info("predict (ray): %s on %s", pool.describe(), ray.cluster_resources())
        start = time.perf_counter()
        total = None if inputs is None else len(inputs.paths) + len(inputs.missing)
        try:
            if inputs is not None and inputs.missing:
                writer.add(error_table(inputs.missing, ["no such file"] * len(inputs.missing)))
            if inputs is None or inputs.paths:
                results = _detections(_dataset(source, inputs, done, pool), cfg, pool)
                _consume(results, writer, total, cfg, on_progress)
        except ray.exceptions.RayError as e:
            raise _our_error(e) from None
        finally:
            writer.flush()
        seconds = time.perf_counter() - start
    return JobSummary(output=str(cfg.output), listed=total,
                      already_done=inputs.already_done if inputs else 0, done=writer.rows - writer.failed,
                      failed=writer.failed, seconds=seconds, pool=pool.describe(), files=writer.files)


def _our_error(e: Exception) -> Exception:
    """Our own error where a Ray error carries one, else the Ray error. An actor that died in `__init__` (a node
    that cannot open the model the driver could) keeps only the text of its error: its last line is ours."""
    cause = e
    for _ in range(8):  # Ray wraps a task's error a few levels deep at most
        if isinstance(cause, YolonasError):
            return cause
        if cause is None:
            break
        cause = getattr(cause, "cause", None) or cause.__cause__
    if isinstance(e, ray.exceptions.RayActorError) and e.actor_init_failed:
        found = re.findall(r"yolonas\.errors\.\w+: (.+)", str(e))
        return InputError(f"an actor could not open the model: {found[-1] if found else str(e).splitlines()[-1]}")
    return e
