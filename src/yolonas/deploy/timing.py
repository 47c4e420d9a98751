"""The one way latency is measured: the CPU and its matrix units, runtime sessions under one thread policy, and
interleaved block timing. Every place that publishes a latency (bench, selective INT8, the NAS latency table, the
showdown, benchmarks/) goes through here.

The policy, and why:
- Threads: `threads` intra-op threads (default: every core), one inter-op thread; OpenVINO with the latency hint.
- ONNX Runtime's workers spin after each run, as users get them (spinning off costs ~10% at 320 px). A run started
  while another session's workers still spin is slowed (x1.2 at 640 px, x1.8 at 320 measured), so paths take
  turns by whole blocks, and each turn starts with one untimed run.
- A latency is the median over blocks of the per-block medians; a ratio is the median of per-block ratios, so load
  from other processes, which changes between blocks, cancels within one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from yolonas.errors import InputError

log = logging.getLogger(__name__)

# Bumped whenever the timing method changes, so that cached latencies measured the old way are refused.
TIMING_VERSION = 2

# /proc/cpuinfo flag -> the name users know, in the order a report lists them.
_ISA = {"amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16", "avx512_vnni": "AVX-512 VNNI", "avx512_bf16": "AVX-512 BF16",
        "avx_vnni": "AVX-VNNI", "avx512f": "AVX-512", "avx2": "AVX2"}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's name, core count and the instruction sets that decide the fastest INT8 and bf16 paths."""

    name: str
    cores: int
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def int8_units(self) -> str | None:
        """The fastest INT8 matrix unit present (AMX-INT8, AVX-512 VNNI, AVX-VNNI), or None."""
        return next((_ISA[f] for f in ("amx_int8", "avx512_vnni", "avx_vnni") if f in self.flags), None)

    @property
    def bf16_units(self) -> str | None:
        """The native bf16 unit present (AMX-BF16, AVX-512 BF16), or None."""
        return next((_ISA[f] for f in ("amx_bf16", "avx512_bf16") if f in self.flags), None)

    @property
    def isa(self) -> list[str]:
        """The relevant instruction sets present."""
        return [name for flag, name in _ISA.items() if flag in self.flags]

    @property
    def missing(self) -> list[str]:
        """The relevant instruction sets absent (AVX-VNNI only matters without AVX-512 VNNI)."""
        implied = {"avx_vnni"} if "avx512_vnni" in self.flags else set()
        return [name for flag, name in _ISA.items() if flag not in self.flags | implied]

    def describe(self) -> str:
        """One line: 'AMD EPYC, 2 cores: AVX-512 VNNI, AVX-512 BF16, AVX-512, AVX2; no AMX-INT8, AMX-BF16'."""
        if not self.flags:
            return f"{self.name}, {self.cores} cores (instruction sets unknown on {platform.system()})"
        missing = f"; no {', '.join(self.missing)}" if self.missing else ""
        return f"{self.name}, {self.cores} cores: {', '.join(self.isa) or 'no AVX2'}{missing}"

    def to_dict(self) -> dict:
        return {"name": self.name, "cores": self.cores, "isa": self.isa, "missing": self.missing,
                "int8_units": self.int8_units, "bf16_units": self.bf16_units}


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in a /proc/cpuinfo text."""
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return name, flags


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU, from /proc/cpuinfo (Linux); elsewhere the name `platform` knows and no flags."""
    try:
        name, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        name, flags = "", frozenset()
    return CpuInfo(name or platform.processor() or platform.machine(), os.cpu_count() or 1, flags)


def cpu_name() -> str:
    """The CPU model name: for result files and cache keys."""
    return cpu_info().name


def warn_if_slow_int8() -> bool:
    """Say once per call that INT8 will be slow when the CPU has no INT8 matrix unit; True when it has one."""
    cpu = cpu_info()
    if cpu.flags and cpu.int8_units is None:
        log.warning("INT8 on %s: no VNNI or AMX units, so INT8 runs on plain AVX2/AVX-512 and may be no faster "
                    "than fp32; compare with `yolonas bench --all`", cpu.name)
        return False
    return True


def bf16_supported() -> bool:
    """True when the CPU has native bf16 (AVX-512 BF16 or AMX-BF16)."""
    return cpu_info().bf16_units is not None


# ------------------------------------------------------------------------------------------------ sessions


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def ort_session(model, threads: int | None = None, *, device: str = "cpu", profile_prefix: str | None = None,
                name: str | None = None):
    """An ONNX Runtime session under the policy; `model` is a path, a ModelProto or serialized bytes.

    `profile_prefix` turns on ORT's profiler (its JSON lands there). `device` cuda adds the CUDA provider.
    """
    import onnxruntime as ort  # noqa: PLC0415 - the onnx extra

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InputError(f"{name or 'model'}: ONNX Runtime has no CUDA here (onnxruntime-gpu is not installed); "
                             "use --device cpu or pip install onnxruntime-gpu")
        providers.insert(0, "CUDAExecutionProvider")
    source = str(model) if isinstance(model, (str, Path)) else model
    if hasattr(source, "SerializeToString"):
        source = source.SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for unreadable files
        raise InputError(f"{name or model}: not a readable ONNX file ({_first_line(e)})") from e


def ort_runner(session, *arrays) -> Callable[[], object]:
    """A no-argument call of `session` on `arrays`, one per input in order: a fn for `time_blocks`."""
    feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}
    return lambda: session.run(None, feeds)


OV_PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}


@functools.cache
def openvino_core():
    """One OpenVINO Core per process (creating one loads the device plugins)."""
    try:
        import openvino as ov  # noqa: PLC0415 - optional dependency
    except ImportError as e:
        raise InputError("OpenVINO is not installed: pip install 'yolonas[openvino]'") from e
    return ov.Core()


def openvino_precision(requested: str, device: str = "CPU") -> str:
    """The inference precision OpenVINO is given: `requested`, or f32 (said in one line) where the CPU lacks bf16."""
    precision = OV_PRECISIONS.get(str(requested).lower())
    if precision is None:
        raise InputError(f"precision {requested!r}: use f32 or bf16")
    if precision == "bf16" and device.upper() == "CPU" and not bf16_supported():
        log.warning("bf16 requested but %s has no native bf16 (AVX-512 BF16 or AMX): running in f32", cpu_name())
        return "f32"
    return precision


def openvino_compiled(model, threads: int | None = None, *, precision: str = "f32", device: str = "CPU",
                      name: str | None = None):
    """An OpenVINO compiled model under the policy; `model` is a path (.xml, .onnx) or an `ov.Model`.

    The precision is explicit: left alone, OpenVINO runs f32 models in bf16 on CPUs with bf16 units.
    """
    core = openvino_core()
    if isinstance(model, (str, Path)):
        try:
            model = core.read_model(str(model))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError with a long trace for bad files
            raise InputError(f"{name or model}: not a model OpenVINO can read ({_first_line(e)})") from e
    device = str(device).upper()
    if device not in core.available_devices and device.split(":")[0] not in core.available_devices:
        raise InputError(f"{name or 'model'}: OpenVINO device {device} is not available here "
                         f"(available: {', '.join(core.available_devices)})")
    config = {"INFERENCE_PRECISION_HINT": openvino_precision(precision, device), "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return core.compile_model(model, device, config)


# ------------------------------------------------------------------------------------------------ timing


@dataclass
class Timings:
    """Run times (ms) per key and block, from `time_blocks`."""

    samples: dict[str, list[list[float]]]
    runs: int
    blocks: int

    def block_medians(self, key: str) -> list[float]:
        return [statistics.median(s) for s in self.samples[key]]

    def median(self, key: str) -> float:
        """The median over blocks of the per-block medians."""
        return statistics.median(self.block_medians(key))

    def ratio(self, num: str, den: str) -> float:
        """Median over blocks of the per-block ratio num/den (noise cancels within a block)."""
        return block_ratio(self.block_medians(num), self.block_medians(den))

    def percentiles(self, key: str) -> dict[str, float]:
        return percentiles([t for block in self.samples[key] for t in block])

    def medians(self) -> dict[str, float]:
        return {k: self.median(k) for k in self.samples}

    def to_dict(self) -> dict:
        return {"blocks": self.blocks, "runs": self.runs, "timing_version": TIMING_VERSION,
                "median_ms": self.medians(), "block_medians_ms": {k: self.block_medians(k) for k in self.samples}}


Turn = Callable[[int], list[float]]  # runs a whole turn of n timed runs elsewhere (a peer process), returns ms


def time_blocks(fns: Mapping[str, Callable[[], object]], blocks: int = 5, runs: int = 10, warmup: int = 2,
                turns: Mapping[str, Turn] | None = None, on_block: Callable[[int, Timings], None] | None = None
                ) -> Timings:
    """Time each fn `runs` times per block, the fns taking turns by whole blocks, each turn after one untimed run.

    `turns` are timed elsewhere (e.g. a peer in its own venv): called with `runs`, they do their own untimed run and
    return their samples, so they take their turn in the same blocks. `on_block` sees the timings after each block.
    """
    if blocks < 1 or runs < 1:
        raise InputError(f"timing needs at least one block and one run, got {blocks} blocks of {runs}")
    turns = dict(turns or {})
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timings = Timings({k: [] for k in (*fns, *turns)}, runs, blocks)
    for b in range(blocks):
        for key, fn in fns.items():
            fn()  # untimed: lets the previous turn's threads settle
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - t0) * 1e3)
            timings.samples[key].append(samples)
        for key, turn in turns.items():
            timings.samples[key].append(list(turn(runs)))
        if on_block is not None:
            on_block(b, timings)
    return timings


def block_ratio(num: list[float], den: list[float]) -> float:
    """Median over blocks of the per-block ratio num/den."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 and the mean of a list of times in ms."""
    q = np.percentile(np.asarray(samples_ms), [50, 90, 99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]), "mean": float(np.mean(samples_ms))}


def cycling(fn: Callable[[object], object], items: list) -> Callable[[], object]:
    """A no-argument fn that calls `fn` on the next of `items` each time (real inputs, in turn)."""
    state = {"i": 0}

    def step():
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return fn(item)

    return step


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """torch's intra-op thread count set to `threads` inside the block and restored after it, also on error."""
    import torch  # noqa: PLC0415 - timing serves torch-free runtimes too

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
