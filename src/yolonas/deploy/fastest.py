"""`runtime="fastest"`: the quickest way this machine runs a model file, measured once and remembered.

The candidates are what can run the file as it is: a checkpoint runs on PyTorch (fp32, and bf16 where the CPU has
native bf16 units), ONNX Runtime and OpenVINO (f32, and bf16 where native) from an fp32 ONNX export written to the
cache; a .onnx on ONNX Runtime or OpenVINO; an .xml on OpenVINO. Each runs the Predictor's three stages on one
image at batch 1, taking turns in blocks (deploy/timing.py), and the lowest median wins. The choice is cached per
file (path, size, modification time), CPU, threads, device and input size in `$YOLONAS_CACHE/fastest.json`, so a
server restart does not measure again; the log says what was chosen, from which figures, or that the cache said so.
A checkpoint is never made INT8 here: that needs calibration images (`yolonas export --int8 --data D`, then give
the .xml).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from yolonas.deploy.backends import OnnxRuntimeBackend, OpenVINOBackend
from yolonas.deploy.export import export_onnx
from yolonas.deploy.files import is_exported, load_model
from yolonas.deploy.timing import bf16_supported, cpu_info, time_blocks
from yolonas.errors import InputError
from yolonas.infer.backend import Backend, TorchBackend
from yolonas.infer.predictor import Predictor
from yolonas.weights import cache_dir

log = logging.getLogger(__name__)

CACHE_FILE = "fastest.json"


def fastest_backend(path: str | Path, *, imgsz: int | None = None, device: str = "cpu",
                    threads: int | None = None, blocks: int = 3, runs: int = 5) -> Backend:
    """The backend of the fastest path for `path` on this machine (cached; see the module doc)."""
    if str(device) != "cpu":
        raise InputError(f"--runtime fastest measures CPU paths; on {device} give --runtime torch (or onnxruntime)")
    key = _cache_key(path, imgsz, threads)
    builders = _candidates(Path(path), imgsz, threads)
    cached = _read_cache().get(key)
    if cached is not None and cached["runtime"] in builders:
        log.info("fastest: %s for %s (cached: %s)", cached["runtime"], path, _figures(cached["median_ms"]))
        return builders[cached["runtime"]]()
    if len(builders) == 1:
        name = next(iter(builders))
        log.info("fastest: %s, the only runtime for %s", name, path)
        return builders[name]()
    backends = {name: build() for name, build in builders.items()}
    medians = _measure(backends, blocks, runs)
    best = min(medians, key=medians.get)
    _write_cache(key, {"runtime": best, "median_ms": medians, "cpu": cpu_info().describe()})
    log.warning("fastest: %s for %s (measured end to end at batch 1, ms: %s)", best, path, _figures(medians))
    return backends[best]


def _candidates(path: Path, imgsz: int | None, threads: int | None) -> dict[str, Callable[[], Backend]]:
    """The runtimes that can run `path` as it is, by name, each a function that opens it."""
    bf16 = bf16_supported()
    if is_exported(path):
        if imgsz is not None:
            raise InputError(f"{path}: the input size of an exported model is set at export; drop --imgsz")
        suffix = path.suffix.lower()
        if suffix not in (".onnx", ".xml"):
            raise InputError(f"{path}: --runtime fastest chooses among CPU runtimes for .onnx and .xml files")
        found = {"openvino": lambda: OpenVINOBackend(path, threads=threads)}
        if suffix == ".onnx":
            found["onnxruntime"] = lambda: OnnxRuntimeBackend(path, threads=threads)
        return found
    net = load_model(path, imgsz).eval().fuse()
    onnx_path = _exported_copy(net, path, imgsz)
    found = {"torch": lambda: TorchBackend(net),
             "onnxruntime": lambda: OnnxRuntimeBackend(onnx_path, threads=threads),
             "openvino": lambda: OpenVINOBackend(onnx_path, threads=threads, precision="f32")}
    if bf16:  # without native bf16 units both would fall back to (or emulate) f32: not a path of their own
        found["torch bf16"] = lambda: TorchBackend(net, bf16=True)
        found["openvino bf16"] = lambda: OpenVINOBackend(onnx_path, threads=threads, precision="bf16")
    return found


def _exported_copy(net, path: Path, imgsz: int | None) -> Path:
    """An fp32 ONNX export of the checkpoint in the cache, made once per checkpoint version and input size."""
    folder = cache_dir() / "fastest" / _file_id(path).replace("|", "_").replace("/", "_").strip("_")
    onnx_path = folder / f"model_{imgsz or 'own'}.onnx"
    if not onnx_path.is_file():
        export_onnx(net, onnx_path, batch=1)
        log.info("fastest: exported %s to %s to time ONNX Runtime and OpenVINO", path, onnx_path)
    return onnx_path


def _measure(backends: dict[str, Backend], blocks: int, runs: int) -> dict[str, float]:
    """Median ms per backend of the Predictor's stages on one image, batch 1, in interleaved blocks."""
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    predictors = {name: Predictor(backend, batch_size=1) for name, backend in backends.items()}
    fns = {name: (lambda p=p: p.detect([image])) for name, p in predictors.items()}
    return time_blocks(fns, blocks=blocks, runs=runs, warmup=2).medians()


def _file_id(path: str | Path) -> str:
    """A checkpoint or export by its absolute path, size and modification time; a published name as it is."""
    p = Path(path)
    if not p.is_file():
        return str(path)
    stat = p.stat()
    return f"{p.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _cache_key(path: str | Path, imgsz: int | None, threads: int | None) -> str:
    return f"{_file_id(path)}|imgsz={imgsz}|threads={threads}|{cpu_info().describe()}"


def _read_cache() -> dict:
    file = cache_dir() / CACHE_FILE
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        log.warning("fastest: %s is unreadable; measuring again", file)
        return {}


def _write_cache(key: str, entry: dict) -> None:
    file = cache_dir() / CACHE_FILE
    cache = _read_cache()
    cache[key] = entry
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1) + "\n")
    tmp.replace(file)  # a reader never sees half a file


def _figures(medians: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(medians.items(), key=lambda kv: kv[1]))
