"""A stopped or finished `yolonas train` names the weights that exist, one line each: Ctrl-C and SIGTERM (kill,
timeout, a scheduler) through the real CLI in a subprocess, and a second run of the same --name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from yolonas.cli import app
from yolonas.data.synthetic import make_synthetic_dataset

SRC = Path(__file__).resolve().parents[1] / "src"
PATIENCE_S = 600  # how long the run may take to write its first last.pt: a guard against a hang, not a timing


def _labelled(lines: list[str], label: str) -> list[str]:
    return [ln for ln in lines if ln.startswith(f"{label}: ")]


def _path_of(line: str) -> Path:
    """The path on a `best: PATH (...)` / `last: PATH (...)` line."""
    return Path(line.split(": ", 1)[1].split(" (", 1)[0])


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train_until_last_pt(tmp_path: Path, val_every: int, workers: int) -> tuple[subprocess.Popen, Path]:
    """Start a long tiny training in its own process group; return once its first last.pt is on disk."""
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=4, n_val=2, size=64, seed=1)
    cmd = [sys.executable, "-m", "yolonas.cli", "train", "--data", str(data), "--recipe", "cpu_smoke", "--epochs",
           "1000", "--imgsz", "64", "--batch", "2", "--workers", str(workers), "--name", "cut", "--set",
           "run.plots=false", "--set", f"run.val_every={val_every}"]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    # Ctrl-C as at a terminal: a parent that ignores SIGINT (pytest-xdist's workers do) passes that on, and Python
    # then installs no KeyboardInterrupt handler.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)
    last = tmp_path / "runs" / "train" / "cut" / "weights" / "last.pt"
    deadline = time.monotonic() + PATIENCE_S
    while not last.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"no last.pt (rc {proc.returncode}): {err[-2000:]}")
        time.sleep(0.2)
    return proc, last


@pytest.mark.parametrize(("sig", "code", "reason", "val_every", "workers"), [
    (signal.SIGINT, 130, "Ctrl-C", 50, 0),  # no validation yet: no best.pt, and the line says why
    (signal.SIGTERM, 143, "SIGTERM", 1, 1),  # as `timeout` sends it: to the group, loader worker included
])
def test_stopped_run_names_the_weights_that_exist_and_the_resume_command(tmp_path, sig, code, reason, val_every,
                                                                         workers):
    proc, last = _train_until_last_pt(tmp_path, val_every, workers)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=PATIENCE_S)
    lines = err.splitlines()
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert any(ln.startswith(f"interrupted by {reason} in epoch ") for ln in lines), err
    (last_line,) = _labelled(lines, "last")
    assert (tmp_path / _path_of(last_line)).resolve() == last.resolve()
    (best_line,) = _labelled(lines, "best")
    if val_every == 1:  # validated each epoch: best.pt exists and is named
        assert (tmp_path / _path_of(best_line)).is_file(), best_line
    else:
        assert best_line == "best: none yet (validation runs every 50 epochs and after the last)"
        assert not (last.parent / "best.pt").exists()
    (resume,) = _labelled(lines, "resume")
    assert resume == f"resume: yolonas train --resume {_path_of(last_line)}"


def test_a_second_run_of_the_same_name_names_its_own_weights(tmp_path, monkeypatch, capsys):
    data = make_synthetic_dataset(tmp_path / "shapes", n_images=4, n_val=2, size=64, seed=1)
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", str(data), "--recipe", "cpu_smoke", "--epochs", "1", "--imgsz", "64", "--batch", "2",
            "--name", "quick", "--set", "run.plots=false"]
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    lines = (result.stderr + capsys.readouterr().err).splitlines()
    assert "train: 1 epoch in runs/train/quick2 (runs/train/quick holds an earlier run)" in lines
    (best,) = _labelled(lines, "best")
    (last,) = _labelled(lines, "last")
    assert _path_of(best) == Path("runs/train/quick2/weights/best.pt") and _path_of(best).is_file()
    assert _path_of(last) == Path("runs/train/quick2/weights/last.pt") and _path_of(last).is_file()
