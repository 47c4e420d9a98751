"""The training clock of one run: <folder>/train_time.json, one part per session that trained it (a call cut off and
resumed has two or more), each with the CPU and threads it ran on and the seconds from its start to its last saved
epoch (the last part: to the end of training). The training time of a run is the sum of its parts: an epoch cut off
before its checkpoint is trained again by the next part, so its time is not counted.

Our trainer writes it here (TrainClock, from the trainer's end-of-epoch call); the Ultralytics child writes the same
file from its own end-of-epoch callback (peer_child/ultralytics_showdown.py, which cannot import this).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

TIME_FILE = "train_time.json"
# What a clock counts: wall-clock seconds (the showdown's measure), or this process's CPU seconds (for tests on a
# shared machine, where other work stretches the wall-clock of the same training).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# A stop asked for by ShowdownConfig.stop_after_epochs: the child exits with this status (EX_TEMPFAIL).
STOPPED_EXIT = 75


class TrainingStopped(Exception):  # noqa: N818 - a stop asked for, not an error
    """A training stopped after the epoch `stop_after_epochs` names, as a session cut off would be: its last.pt and
    clock are saved, no row is written, and the next call resumes it."""


def read_parts(folder: Path) -> list[dict]:
    """The parts of the run in `folder` (none when it never finished an epoch)."""
    path = Path(folder) / TIME_FILE
    return json.loads(path.read_text())["parts"] if path.is_file() else []


def _write_parts(folder: Path, parts: list[dict]) -> None:
    path = Path(folder) / TIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"parts": parts}, indent=1) + "\n")
    tmp.replace(path)  # a session killed while writing leaves the previous file whole


class TrainClock:
    """The part of one session: started now, written after every saved epoch and at the end of training."""

    def __init__(self, folder: Path, cpu: str, threads: int, clock: str = "wall"):
        self.folder, self.cpu, self.threads, self.clock = Path(folder), cpu, threads, clock
        self.now = CLOCKS[clock]
        self.t0 = self.now()
        self.parts = read_parts(folder)
        self.part: dict | None = None

    def _open(self, from_epoch: int, precision: str | None) -> dict:
        if self.part is None:
            self.part = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                         "cpu": self.cpu, "threads": self.threads, "clock": self.clock, "precision": precision,
                         "from_epoch": from_epoch,
                         "epochs_done": from_epoch, "epoch_ends": [], "seconds": 0.0, "finished": False}
            self.parts.append(self.part)
        return self.part

    def epoch_end(self, from_epoch: int, epochs_done: int, precision: str | None = None) -> None:
        """An epoch is saved: `epochs_done` in all, this session having started after `from_epoch`."""
        part = self._open(from_epoch, precision)
        now = round(self.now() - self.t0, 3)
        part.update(epochs_done=epochs_done, seconds=now, epoch_ends=[*part["epoch_ends"], now])
        _write_parts(self.folder, self.parts)

    def finish(self, epochs_done: int, precision: str | None = None) -> list[dict]:
        """Training returned: this part ends now; every part of the run."""
        part = self._open(epochs_done, precision)
        part.update(epochs_done=epochs_done, seconds=round(self.now() - self.t0, 3), finished=True)
        _write_parts(self.folder, self.parts)
        return self.parts


def one_or_mixed(values: list) -> str | int | None:
    """The one value of a list, or 'mixed: a; b' when they differ; None for an empty list."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) <= 1:
        return distinct[0] if distinct else None
    return "mixed: " + "; ".join(map(str, distinct))


TRAIN_FIELDS = ("train_s", "train_cpu", "train_threads", "precision", "train_parts", "train_time_rule")
TIME_RULE = ("train_s is the sum of train_parts' seconds, one part per call that trained the run: each from its start "
             "to its last saved epoch, the last to the end of training; an epoch cut off before its checkpoint is "
             "trained again by the next part and not counted")


def parts_record(parts: list[dict]) -> dict:
    """A run's training fields from its parts: seconds (their sum), CPU and threads (one, or 'mixed: ...'), the
    precision, how many parts, and the parts themselves."""
    return {"train_s": sum(p["seconds"] for p in parts), "train_cpu": one_or_mixed([p["cpu"] for p in parts]),
            "train_threads": one_or_mixed([p["threads"] for p in parts]),
            "precision": one_or_mixed([p["precision"] for p in parts if p.get("precision")]),
            "train_parts": parts, "train_time_rule": TIME_RULE}
