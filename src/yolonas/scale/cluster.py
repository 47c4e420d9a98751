"""Ray for a job: a local Ray started here or a cluster joined, quiet; and how many actors of which size it holds."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray
import ray.data

from yolonas.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_THREADS = 4  # per CPU actor when neither --actors nor threads are given: a core count one model uses well
ADDRESS = re.compile(r"^(?:auto|(?:ray://)?(?P<host>[A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5}))$")
CONNECT_TIMEOUT_S = 5.0


def check_address(address: str) -> None:
    """InputError unless `address` is auto, host:port or ray://host:port with something listening there.

    Ray itself retries a GCS address that nobody answers for minutes; one TCP connection says it at once."""
    match = ADDRESS.match(address)
    if match is None:
        raise InputError(f"--address {address}: give auto, host:port (the head's GCS port, 6379 by default) or "
                         "ray://host:port (Ray Client, 10001)")
    if match["host"] is None:
        return
    try:
        socket.create_connection((match["host"].strip("[]"), int(match["port"])), CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise InputError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                         "`ray start --head`, or leave out --address for a Ray on this machine") from None


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for one job: the caller's when Ray is already up (a notebook, a test's cluster); else the cluster at
    `address` joined, or a new local Ray with every CPU of this machine and no dashboard; shut down afterwards
    when started here."""
    if address:
        check_address(address)
    if ray.is_initialized():
        yield
        return
    try:
        if address:
            ray.init(address=address, logging_level=logging.ERROR)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR)
    except ConnectionError as e:
        raise InputError(f"--address {address}: {e}") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Ray Data without its own progress bars and plan printouts (the job draws one bar), restored afterwards."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.enable_auto_log_stats
    logger = logging.getLogger("ray.data")
    level = logger.level
    ctx.enable_progress_bars = ctx.print_on_execution_start = ctx.enable_auto_log_stats = False
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.enable_auto_log_stats = saved
        logger.setLevel(level)


@dataclass(frozen=True)
class ActorPlan:
    """The actor pool: `actors` actors, each reserving `threads` CPUs (its inference threads) and `gpus` GPUs."""

    actors: int
    threads: int
    gpus: int = 0

    def describe(self) -> str:
        """One line for logs and the summary."""
        actors = f"{self.actors} actor{'s' if self.actors > 1 else ''}"
        return f"{actors} x {self.threads} threads" + (f" x {self.gpus} GPU" if self.gpus else "")


def plan_actors(device: str, actors: int | None, threads: int | None) -> ActorPlan:
    """The pool that fits the Ray cluster: on GPUs one actor per GPU (or `actors`); on CPUs `threads` per actor
    (default: the CPUs shared out among `actors`, else 4) and as many actors as the CPUs hold (or `actors`)."""
    if actors is not None and actors < 1 or threads is not None and threads < 1:
        raise InputError(f"--actors {actors}, threads {threads}: give at least 1")
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = int(sum(r.get("CPU", 0) for r in nodes))
    node_cpus = int(max((r.get("CPU", 0) for r in nodes), default=0))
    if device.startswith("cuda"):
        gpus = int(sum(r.get("GPU", 0) for r in nodes))
        if gpus < 1:
            raise InputError(f"--device {device}: the Ray cluster has no GPU; use --device cpu")
        return ActorPlan(actors or gpus, threads or 1, 1)
    threads = threads or (max(1, cpus // actors) if actors else min(node_cpus, DEFAULT_THREADS))
    plan = ActorPlan(actors or max(1, cpus // threads), min(threads, node_cpus))
    if plan.actors * plan.threads > cpus:
        raise InputError(f"{plan.describe()} need {plan.actors * plan.threads} CPUs; the Ray cluster has {cpus}: "
                         "give fewer --actors")
    return plan
