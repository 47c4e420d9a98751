"""Batch inference on Ray Data, from one machine to a cluster: one row per image in Parquet or JSONL files.

    from yolonas.scale import JobConfig, run_job
    summary = run_job("photos/", JobConfig(model="best_int8.xml", output="detections/"))

Needs the optional extra: pip install "yolonas[ray]".
"""

from yolonas.errors import InputError

try:
    import pyarrow  # noqa: F401
    import ray.data  # noqa: F401
except ImportError as e:  # the extra is missing: a one-line error rather than a traceback
    raise InputError(f'--engine ray needs Ray Data ({e.name} is missing): pip install "yolonas[ray]"') from None

from yolonas.scale.actor import DetectActor, ModelFiles, PredictOptions  # noqa: E402
from yolonas.scale.cluster import ActorPlan, plan_actors, ray_session  # noqa: E402
from yolonas.scale.inputs import InputPlan, list_source, plan_inputs  # noqa: E402
from yolonas.scale.job import JobConfig, JobSummary, run_job  # noqa: E402
from yolonas.scale.rows import SCHEMA, done_paths, read_rows  # noqa: E402

__all__ = [
    "ActorPlan", "DetectActor", "InputPlan", "JobConfig", "JobSummary", "ModelFiles", "PredictOptions", "SCHEMA",
    "done_paths", "list_source", "plan_actors", "plan_inputs", "ray_session", "read_rows", "run_job",
]
