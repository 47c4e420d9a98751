"""`yolonas predict --engine ray`: the command's flags checked and turned into one cluster job."""

from __future__ import annotations

from pathlib import Path

from yolonas.errors import InputError
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.tiling import TileConfig
from yolonas.scale.actor import PredictOptions
from yolonas.scale.job import JobConfig, JobSummary, run_job

ENGINES = ("local", "ray")


def predict_on_ray(source: str, model: str, *, engine: str, output: str | None, address: str | None = None,
                   actors: int | None = None, skip_done: bool = False, fmt: str = "parquet", imgsz: int | None = None,
                   batch: int = 8, device: str = "cpu", half: bool = False, nms: NMSConfig | None = None,
                   tiles: TileConfig | None = None) -> JobSummary:
    """Run `predict`'s job on Ray with a progress bar: the images of `source`, one row each in `output`."""
    if engine not in ENGINES:
        raise InputError(f"--engine {engine}: give {' or '.join(ENGINES)}")
    if engine != "ray":
        raise InputError("--address, --actors, --output, --skip-done and --format need --engine ray")
    if not output:
        raise InputError("--engine ray writes one row per image to a folder: give --output DIR")
    if Path(output).is_file():
        raise InputError(f"--output {output}: a file; give a folder for the result files")
    options = PredictOptions(imgsz=imgsz, device=device, nms=nms, tiles=tiles, batch=batch, half=half)
    cfg = JobConfig(model=model, output=output, fmt=fmt, address=address, actors=actors, predict=options,
                    skip_done=skip_done, progress=True)
    return run_job(source, cfg)
