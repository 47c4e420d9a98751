"""Ultralytics models through Ultralytics' own export and predictor on the CPU: the timing peer (issue 5 and on).

Run inside .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh). Models are built from their yaml with random
weights (nothing is downloaded; speed does not depend on weights) and exported with Ultralytics' exporter.

Plain block mode (YOLOv8s on ONNX Runtime, image already decoded): one JSON line per block with medians in ms of
end to end (letterbox + forward + NMS + boxes back to the image) and of a bare ORT `session.run`; with --sync a
block starts only when a line arrives on stdin.

--serve: several (model, path) keys, each `YOLO(export).predict(source="image.jpg")` timed from the file path
(decode included). After a `ready` line it reads keys from stdin, one per line, and answers each with one
`block` line; `quit` or EOF ends it. Paths: onnx (ONNX Runtime), openvino (FP32 IR), openvino_int8 (NNCF).

    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_bench.py --info
    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_bench.py --blocks 5 --runs 5 [--sync] [IMAGE ...]
    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_bench.py --serve --models yolov8s,yolo26s \\
        --paths onnx,openvino,openvino_int8 --runs 10 [IMAGE ...]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import onnxruntime as ort
import torch
from _offline import NETWORK_ATTEMPTS, REPO, WORK, go_offline, settings
from ultralytics_loader import linked_data

PATHS = ("onnx", "openvino", "openvino_int8")
DEFAULT_MODELS = "yolov8s,yolo11s,yolo26s"
E2E_SUFFIX = "_e2e"  # yolo26s_e2e: YOLO26 exported with nms=False, i.e. its one-to-one (NMS-free) head
CONF, IOU, MAX_DET = 0.25, 0.7, 300


def _datasets_root() -> Path:
    return Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))


def _images(paths: list[str], limit: int) -> list[Path]:
    """Image files given, else the first `limit` coco128 train images (plain mode)."""
    if paths:
        return [Path(p) for p in paths]
    root = _datasets_root()
    files = sorted((root / "coco128" / "images" / "train2017").glob("*.jpg"))[:limit]
    if not files:
        raise SystemExit(f"no images: {root}/coco128/images/train2017 has no .jpg; pass image paths")
    return files


def _serve_images(paths: list[str], limit: int) -> list[Path]:
    """Image files given, else the first `limit` aquarium test images (serve mode)."""
    if paths:
        files = [Path(p).resolve() for p in paths]
    else:
        root = _datasets_root() / "aquarium" / "test" / "images"
        files = sorted(root.glob("*.jpg"))[:limit]
    if not files or not all(f.is_file() for f in files):
        raise SystemExit(f"no images or a missing file in {[str(f) for f in files] or 'aquarium/test/images'}")
    return files


# ---------------------------------------------------------------------------------------------------- exports


@dataclass(frozen=True)
class Calib:
    """Calibration images of the INT8 export: a data.yaml under WORK, the split the exporter reads, how many."""

    data: Path
    split: str
    images: int


def calib_data(src: Path) -> Path:
    """A copy of the detection data.yaml `src` under WORK whose splits are links to its images and labels.

    Ultralytics writes `labels.cache` next to the labels folder it derives (`images` -> `labels`) and resolves
    linked folders, so the links are per file: the cache lands under WORK, never in the shared data set.
    """
    return linked_data(src, WORK / "calib" / src.parent.name)


def _yaml_name(model: str) -> str:
    return f"{model.removesuffix(E2E_SUFFIX)}.yaml"


def artifact(model: str, path: str, imgsz: int) -> Path:
    """Where the export of (model, path, imgsz) is cached; the names end as Ultralytics' predictor expects."""
    if path == "onnx":
        return WORK / f"{model}_{imgsz}.onnx"
    return WORK / f"{model}_{imgsz}_{'int8_' if path == 'openvino_int8' else ''}openvino_model"


def export_kwargs(model: str, path: str, imgsz: int, calib: Calib | None) -> dict[str, Any]:
    """Arguments of `YOLO(yaml).export`: Ultralytics' defaults except batch 1, static shape, and the INT8 data."""
    kw: dict[str, Any] = {"imgsz": imgsz, "batch": 1, "dynamic": False, "device": "cpu"}
    if model.endswith(E2E_SUFFIX):
        kw["nms"] = False  # Ultralytics 8.4's default nms=None exports the one-to-many head, run with NMS
    if path == "onnx":
        # fp32 is the default precision: `half=False` is a deprecated alias of it in 8.4 (`quantize`)
        kw.update(format="onnx", simplify=importlib.util.find_spec("onnxslim") is not None)
    elif path == "openvino":
        kw.update(format="openvino")
    else:
        if calib is None:
            raise ValueError("openvino_int8 needs calibration data")
        # quantize=8 is what `int8=True` maps to (a deprecated alias in 8.4); fraction as an int is an image count
        kw.update(format="openvino", quantize=8, data=str(calib.data), split=calib.split, fraction=calib.images)
    return kw


def _sidecar(target: Path) -> Path:
    return target.with_name(f"{target.name}.export.json")


def export(model: str, path: str, imgsz: int, calib: Calib | None, force: bool = False) -> dict[str, Any]:
    """Export (model, path) with Ultralytics' exporter unless cached with the same arguments; returns its record."""
    target = artifact(model, path, imgsz)
    kwargs = export_kwargs(model, path, imgsz, calib)
    sidecar = _sidecar(target)
    if target.exists() and not force:
        record = json.loads(sidecar.read_text()) if sidecar.is_file() else {"kwargs": kwargs, "export_s": None}
        if record["kwargs"] == kwargs:
            return {**record, "file": str(target), "cached": True}
    attempts = len(NETWORK_ATTEMPTS)
    t0 = time.perf_counter()
    _ultralytics_export(_yaml_name(model), kwargs, target)
    record = {"kwargs": kwargs, "export_s": round(time.perf_counter() - t0, 1),
              "network_attempts": NETWORK_ATTEMPTS[attempts:]}
    sidecar.write_text(json.dumps(record, indent=1))
    return {**record, "file": str(target), "cached": False}


def _ultralytics_export(yaml_name: str, kwargs: dict[str, Any], target: Path) -> None:
    """Run `YOLO(yaml_name).export(**kwargs)` and move what it writes to `target`."""
    from ultralytics import YOLO  # noqa: PLC0415 - only after go_offline()

    WORK.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(WORK)  # the exporter writes next to the model's source name (yolov8s.yaml -> ./yolov8s.onnx)
    try:
        out = Path(YOLO(yaml_name).export(**kwargs)).resolve()
        if target.is_dir():
            shutil.rmtree(target)
        out.replace(target)
    finally:
        os.chdir(cwd)


def export_onnx(imgsz: int, force: bool = False) -> Path:
    """Export random-init YOLOv8s with Ultralytics' own ONNX exporter; cached under .venv-ultralytics/work."""
    return Path(export("yolov8s", "onnx", imgsz, None, force)["file"])


def _no_font_check() -> None:
    """Skip the font look-up of Ultralytics' data.yaml check: a plotting font, fetched from the web when absent."""
    import ultralytics.data.utils as data_utils  # noqa: PLC0415

    data_utils.check_font = lambda font="Arial.ttf": None


def info(imgsz: int) -> dict:
    """Parameters and GFLOPs of YOLOv8s as Ultralytics reports them, unfused and fused."""
    from ultralytics import YOLO  # noqa: PLC0415 - only after go_offline()

    model = YOLO("yolov8s.yaml")
    layers, params, _, gflops = model.info(verbose=True, imgsz=imgsz)
    model.fuse()
    f_layers, f_params, _, f_gflops = model.info(verbose=True, imgsz=imgsz)
    return {"model": "yolov8s", "imgsz": imgsz, "layers": layers, "params": params, "gflops": round(gflops, 2),
            "fused_layers": f_layers, "fused_params": f_params, "fused_gflops": round(f_gflops, 2)}


# ------------------------------------------------------------------------------------------------ thread fixes


def _set_ort_threads(model, onnx_path: Path, threads: int):
    """Rebuild the predictor's ORT session with `threads` intra-op threads; returns the new session.

    Ultralytics' predictor builds its InferenceSession with default options and offers no argument for them
    (ONNXBackend takes session_options, but AutoBackend/predict do not pass any), so the session object is
    swapped for one on the same file and provider with the thread count set; the rest of the path is untouched.
    """
    backend = model.predictor.model.backend
    old = backend.session
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    backend.session = ort.InferenceSession(str(onnx_path), opts, providers=old.get_providers())
    return backend.session


OV_PROPERTIES = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT",
                 "EXECUTION_DEVICES", "ENABLE_HYPER_THREADING", "ENABLE_CPU_PINNING")


def _ov_properties(compiled) -> dict[str, str]:
    """The compiled model's settings that decide its speed, as strings."""
    props = {}
    for name in OV_PROPERTIES:
        try:
            value = compiled.get_property(name)
        except RuntimeError:  # not every plugin reports every property
            continue
        props[name] = value.get_type_name() if hasattr(value, "get_type_name") else str(value)  # ov.Type: 'bf16'
    return props


def _set_ov_threads(backend, ir_dir: Path, threads: int) -> dict[str, Any]:
    """Recompile the predictor's OpenVINO model with Ultralytics' own config plus INFERENCE_NUM_THREADS=`threads`.

    OpenVINOBackend compiles with `{"PERFORMANCE_HINT": "LATENCY"}` (plus ARM/NPU extras) and exposes no thread
    setting; it keeps that call as `backend.compile_model`, a partial of `core.compile_model`. The same model file
    is read again and compiled with the same device and config, threads added; the partial is replaced too, so
    Ultralytics' own recompiles (dynamic INT8 on AMX CPUs) keep the setting.
    """
    compile_fn = backend.compile_model
    default = _ov_properties(backend.ov_compiled_model)
    ultralytics_config = dict(compile_fn.keywords["config"])
    config = {**ultralytics_config, "INFERENCE_NUM_THREADS": threads}
    core = compile_fn.func.__self__
    xml = next(ir_dir.glob("*.xml"))
    backend.compile_model = partial(compile_fn.func, device_name=compile_fn.keywords["device_name"], config=config)
    backend.ov_compiled_model = backend.compile_model(core.read_model(model=str(xml), weights=xml.with_suffix(".bin")))
    compiled = _ov_properties(backend.ov_compiled_model)
    return {"precision_hint": compiled.get("INFERENCE_PRECISION_HINT"), "ov_device": compile_fn.keywords["device_name"],
            "ov_config_ultralytics": _jsonable(ultralytics_config),
            "ov_config": _jsonable(config), "ov_compiled_default": default,
            "ov_compiled": compiled}


def _jsonable(config: dict) -> dict[str, Any]:
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in config.items()}


def _thread_count() -> int:
    return len(os.listdir("/proc/self/task")) if Path("/proc/self/task").is_dir() else -1


# ------------------------------------------------------------------------------------------- plain block mode


def bench(images: list[Path], blocks: int, runs: int, warmup: int, imgsz: int, threads: int, sync: bool) -> None:
    """Print one JSON line per block: medians (ms) of end-to-end predict and of the bare ORT session.run."""
    import ultralytics  # noqa: PLC0415 - only after go_offline()
    from ultralytics import YOLO  # noqa: PLC0415

    onnx_path = export_onnx(imgsz)
    arrays = []
    for p in images:
        im = cv2.imread(str(p))  # BGR, which is what Ultralytics expects of numpy input
        if im is None:
            raise SystemExit(f"{p}: cannot read image")
        arrays.append(im)
    model = YOLO(str(onnx_path), task="detect")
    kw = {"imgsz": imgsz, "device": "cpu", "conf": CONF, "iou": IOU, "max_det": MAX_DET, "verbose": False,
          "save": False}
    threads_before = _thread_count()
    model.predict(source=arrays[0], **kw)  # builds the predictor and its ORT session
    threads_default = _thread_count() - threads_before
    session = _set_ort_threads(model, onnx_path, threads)
    threads_ours = _thread_count() - threads_before
    # select_device() in predictor setup pins torch to cpu_count - 1 threads; pre/post-processing (NMS) run in torch
    torch.set_num_threads(threads)
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    out_names = [o.name for o in session.get_outputs()]

    n = 0

    def e2e():
        nonlocal n
        r = model.predict(source=arrays[n % len(arrays)], **kw)[0]
        n += 1
        return r

    def forward():
        return session.run(out_names, {inp.name: x})

    for _ in range(warmup):
        e2e()
        forward()
    header = {"event": "ready", "peer": "ultralytics", "ultralytics": ultralytics.__version__,
              "onnxruntime": ort.__version__, "torch": torch.__version__, "onnx": str(onnx_path),
              "input": [inp.name, inp.shape], "ort_intra_op_threads": threads, "torch_threads": torch.get_num_threads(),
              "process_threads": _thread_count(), "threads_added_by_default_session": threads_default,
              "threads_added_by_our_session": threads_ours,
              "images": len(arrays), "network_attempts": NETWORK_ATTEMPTS}
    print(json.dumps(header), flush=True)
    for b in range(blocks):
        if sync and not sys.stdin.readline():
            break  # driver closed stdin: stop
        e2e_ms, fwd_ms, pre_ms, inf_ms, post_ms = [], [], [], [], []
        fwd_cpu = fwd_wall = 0.0
        for _ in range(runs):
            t0 = time.perf_counter()
            r = e2e()
            e2e_ms.append((time.perf_counter() - t0) * 1e3)
            pre_ms.append(r.speed["preprocess"])
            inf_ms.append(r.speed["inference"])
            post_ms.append(r.speed["postprocess"])
            t0, c0 = time.perf_counter(), time.process_time()
            forward()
            dt = time.perf_counter() - t0
            fwd_ms.append(dt * 1e3)
            fwd_wall += dt
            fwd_cpu += time.process_time() - c0
        med = statistics.median
        print(json.dumps({"event": "block", "peer": "ultralytics", "block": b, "runs": runs,
                          "e2e_ms": round(med(e2e_ms), 3), "forward_ms": round(med(fwd_ms), 3),
                          "preprocess_ms": round(med(pre_ms), 3), "inference_ms": round(med(inf_ms), 3),
                          "postprocess_ms": round(med(post_ms), 3),
                          # cores kept busy during forward: about `threads` when ORT's threads get their cores
                          "forward_cpu_per_wall": round(fwd_cpu / fwd_wall, 2),
                          "torch_threads": torch.get_num_threads(),
                          "network_attempts": len(NETWORK_ATTEMPTS)}),
              flush=True)


# ------------------------------------------------------------------------------------------------- serve mode


@dataclass
class Entry:
    """One warm (model, path) predictor and what the ready line says about it."""

    key: str
    model: Any  # ultralytics.YOLO
    info: dict[str, Any]
    served: int = 0  # predictions made so far: where this key is in the image cycle
    blocks: int = 0
    images: list[Path] = field(default_factory=list)

    def predict(self, kw: dict[str, Any]):
        """One end-to-end prediction from the next image file of the cycle; returns its Results."""
        source = str(self.images[self.served % len(self.images)])
        self.served += 1
        return self.model.predict(source=source, **kw)[0]


def predict_kwargs(imgsz: int) -> dict[str, Any]:
    return {"imgsz": imgsz, "device": "cpu", "conf": CONF, "iou": IOU, "max_det": MAX_DET, "verbose": False,
            "save": False}


def build(key: str, record: dict[str, Any], images: list[Path], imgsz: int, threads: int, warmup: int) -> Entry:
    """Load an export in Ultralytics' predictor, set its runtime's threads, warm it up."""
    from ultralytics import YOLO  # noqa: PLC0415 - only after go_offline()

    file = Path(record["file"])
    model = YOLO(str(file), task="detect")
    entry = Entry(key, model, {}, images=images)
    entry.predict(predict_kwargs(imgsz))  # builds the predictor and its runtime session
    backend = model.predictor.model.backend
    if file.suffix == ".onnx":
        _set_ort_threads(model, file, threads)
        runtime = {"precision_hint": "f32", "ort_intra_op_threads": threads, "ort_inter_op_threads": 1}
    else:
        runtime = _set_ov_threads(backend, file, threads)
    torch.set_num_threads(threads)
    for _ in range(warmup):
        entry.predict(predict_kwargs(imgsz))
    end2end = bool(getattr(model.predictor.model, "end2end", False))
    entry.info = {"file": str(file), "format": model.predictor.model.format, "end2end": end2end,
                  "nms": not end2end, "export_s": record.get("export_s"), "cached": record.get("cached"),
                  "export_kwargs": record.get("kwargs"), **runtime}
    return entry


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def run_block(entry: Entry, runs: int, imgsz: int, threads: int) -> dict[str, Any]:
    """One untimed prediction, then `runs` timed end-to-end predictions from the file path; the block line."""
    kw = predict_kwargs(imgsz)
    torch.set_num_threads(threads)  # every predictor's setup pins torch to cpu_count - 1 threads
    entry.predict(kw)  # settles this key's runtime after the other keys' blocks
    e2e, pre, inf, post, boxes = [], [], [], [], []
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        t0 = time.perf_counter()
        r = entry.predict(kw)
        e2e.append((time.perf_counter() - t0) * 1e3)
        pre.append(r.speed["preprocess"])
        inf.append(r.speed["inference"])
        post.append(r.speed["postprocess"])
        boxes.append(len(r.boxes))
    cpu_per_wall = (time.process_time() - t_cpu) / (time.perf_counter() - t_wall)
    entry.blocks += 1
    return {"event": "block", "key": entry.key, "block": entry.blocks - 1, "runs": runs,
            "e2e_ms": _median(e2e), "samples_ms": [round(v, 3) for v in e2e],
            "preprocess_ms": _median(pre), "inference_ms": _median(inf), "postprocess_ms": _median(post),
            # about `threads` when the runtime's threads get their cores; near 1 when another process holds one
            "cpu_per_wall": round(cpu_per_wall, 2), "boxes": statistics.median(boxes),
            "network_attempts": len(NETWORK_ATTEMPTS)}


def _protocol_stream() -> TextIO:
    """A stream on the real stdout for the JSON lines; fd 1 itself then goes to stderr.

    Exporters, NNCF and OpenVINO print progress to stdout, some through handlers that hold the original stream,
    so the descriptor is redirected: the driver reads nothing on stdout but this script's JSON lines.
    """
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return stream


def _versions() -> dict[str, str | None]:
    """Installed versions of the packages on the timed paths; None where one is absent (onnx needs no OpenVINO)."""
    versions = {}
    for name in ("ultralytics", "onnxruntime", "openvino", "nncf", "torch"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def serve(args: argparse.Namespace, images: list[Path]) -> None:
    """Build every (model, path) key, print the ready line, then one block line per key read from stdin."""
    out = _protocol_stream()
    _no_font_check()
    models = [m for m in args.models.split(",") if m]
    paths = [p for p in args.paths.split(",") if p]
    if unknown := [p for p in paths if p not in PATHS]:
        raise SystemExit(f"unknown paths {unknown}; choose from {PATHS}")
    calib = None
    if "openvino_int8" in paths:
        calib = Calib(calib_data(Path(args.calib_data).resolve()), args.calib_split, args.calib_images)
    entries: dict[str, Entry] = {}
    for model in models:
        for path in paths:
            key = f"{model}:{path}"
            record = export(model, path, args.imgsz, calib)
            print(f"[peers] {key}: {record['file']} (export {record['export_s']} s, cached {record['cached']})",
                  file=sys.stderr, flush=True)
            entries[key] = build(key, record, images, args.imgsz, args.threads, args.warmup)
    ready = {"event": "ready", "peer": "ultralytics", "mode": "serve", "keys": list(entries), **_versions(),
             "threads": args.threads, "torch_threads": torch.get_num_threads(), "imgsz": args.imgsz, "conf": CONF,
             "iou": IOU, "max_det": MAX_DET, "runs": args.runs, "images": [str(p) for p in images],
             "calib": {"data": str(calib.data), "split": calib.split, "images": calib.images} if calib else None,
             "info": {k: e.info for k, e in entries.items()}, "network_attempts": NETWORK_ATTEMPTS}
    out.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command in entries:
            out.write(json.dumps(run_block(entries[command], args.runs, args.imgsz, args.threads)) + "\n")
        elif command:
            out.write(json.dumps({"event": "error", "error": f"unknown key {command!r}", "keys": list(entries)}) + "\n")


# -------------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", help="image files (default: coco128 train images; --serve: aquarium test)")
    ap.add_argument("--info", action="store_true", help="print params/GFLOPs as Ultralytics reports them and exit")
    ap.add_argument("--export", action="store_true", help="(re-)export the ONNX file, print its path and exit")
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per block")
    ap.add_argument("--warmup", type=int, default=5, help="untimed predictions after building (each key in --serve)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op / OpenVINO inference threads, torch threads")
    ap.add_argument("--limit", type=int, help="how many default images: 32 coco128, --serve 16 aquarium test")
    ap.add_argument("--sync", action="store_true", help="wait for a line on stdin before each block")
    ap.add_argument("--serve", action="store_true", help="build --models x --paths, then run one block per key read")
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"--serve: yaml names; '{E2E_SUFFIX}' = NMS-free export")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"--serve: any of {','.join(PATHS)}")
    ap.add_argument("--calib-data", default=str(_datasets_root() / "aquarium" / "data.yaml"),
                    help="data.yaml of the INT8 calibration images (default: aquarium)")
    ap.add_argument("--calib-split", default="train", help="its split to calibrate on (aquarium: valid/images)")
    ap.add_argument("--calib-images", type=int, default=64, help="calibration images: the first N of the split")
    return ap


def main() -> None:
    args = _parser().parse_args()
    go_offline(threads=args.threads)
    settings()
    if args.info:
        print(json.dumps(info(args.imgsz)), flush=True)
    elif args.export:
        print(json.dumps({"onnx": str(export_onnx(args.imgsz, force=True)), "network_attempts": NETWORK_ATTEMPTS}))
    elif args.serve:
        serve(args, _serve_images(args.images, args.limit or 16))
    else:
        bench(_images(args.images, args.limit or 32), args.blocks, args.runs, args.warmup, args.imgsz, args.threads,
              args.sync)


if __name__ == "__main__":
    main()
