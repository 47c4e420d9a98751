"""Every deployment path of one model on this machine: PyTorch fp32/bf16, ONNX Runtime fp32/INT8, OpenVINO
f32/bf16/INT8 (and the CUDA paths where present), built from one checkpoint so `yolonas bench --all` can time them
side by side (deploy.benchmark.compare) and say which is fastest here.

A path this machine cannot run well is still built and timed when it runs at all (the table says what is missing);
a path it cannot run is listed with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

import torch

from yolonas.deploy.backends import OnnxRuntimeBackend, OpenVINOBackend
from yolonas.deploy.export import export_onnx
from yolonas.deploy.timing import bf16_supported, cpu_info
from yolonas.errors import InputError
from yolonas.infer.backend import TorchBackend
from yolonas.infer.predictor import Predictor
from yolonas.quant.config import QuantConfig
from yolonas.quant.pipeline import quantize

log = logging.getLogger(__name__)

BASELINE = "onnxruntime fp32"


def _openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        return False
    return True


def _int8_files(model, work: Path, calib: str | Path, calib_images: int, seed: int, threads: int) -> dict[str, Path]:
    """The INT8 files: QDQ .onnx for ONNX Runtime and, where OpenVINO imports, NNCF's IR; calibrated on `calib`."""
    cfg = QuantConfig(calib, work / "int8_onnx", fmt="onnx", calib_images=calib_images, val_images=0, seed=seed,
                      threads=threads)
    files = {"onnxruntime int8": quantize(model, cfg).output}
    if _openvino_installed():
        cfg = dataclasses.replace(cfg, out_dir=work / "int8_openvino", fmt="openvino")
        files["openvino int8"] = quantize(model, cfg).output
    return {k: Path(v) for k, v in files.items()}


def build_paths(model, work: str | Path, calib: str | Path, *, threads: int | None = None, device: str = "cpu",
                calib_images: int = 32, seed: int = 0) -> tuple[dict[str, object], dict[str, str]]:
    """(path name -> backend, path name -> why it was not built) for a fused copy of `model` (a YoloNAS).

    `calib` (a data set or image folder) calibrates the INT8 files. The files land in `work`.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).eval()
    net = net if net.is_fused else net.fuse()
    backends: dict[str, object] = {}
    skipped: dict[str, str] = {}
    backends["torch fp32"] = TorchBackend(net, "cpu")
    if bf16_supported():
        backends["torch bf16"] = TorchBackend(net, "cpu", bf16=True)
    else:
        skipped["torch bf16"] = f"{cpu_info().name} has no native bf16 (AVX-512 BF16 or AMX)"
    onnx_path = export_onnx(net, work / "model_fp32.onnx", batch=1)
    backends[BASELINE] = OnnxRuntimeBackend(onnx_path, threads=threads)
    for name, path in _int8_files(net, work, calib, calib_images, seed, threads or 2).items():
        backends[name] = OnnxRuntimeBackend(path, threads=threads) if path.suffix == ".onnx" else \
            OpenVINOBackend(path, threads=threads)
    if _openvino_installed():
        backends["openvino f32"] = OpenVINOBackend(onnx_path, threads=threads, precision="f32")
        if bf16_supported():
            backends["openvino bf16"] = OpenVINOBackend(onnx_path, threads=threads, precision="bf16")
        else:
            skipped["openvino bf16"] = f"{cpu_info().name} has no native bf16 (AVX-512 BF16 or AMX)"
    else:
        skipped["openvino"] = "openvino is not installed: pip install 'yolonas[openvino]'"
    _cuda_paths(net, device, backends, skipped)
    return backends, skipped


def _cuda_paths(net, device: str, backends: dict, skipped: dict) -> None:
    """PyTorch fp16 on the GPU when `device` is a CUDA device that exists."""
    if not str(device).startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device here (torch.cuda.is_available() is False); "
                         "use --device cpu")
    backends["torch fp16 cuda"] = TorchBackend(copy.deepcopy(net), device, half=True)
    backends["torch fp32 cuda"] = TorchBackend(copy.deepcopy(net), device)


def _items(source: str | Path | None, data: str | Path | None, limit: int = 16) -> tuple[list, str]:
    """The images to time on: files of `source`, else of `data`'s val split, else random arrays (said so)."""
    import numpy as np  # noqa: PLC0415

    from yolonas.data.splits import source_images  # noqa: PLC0415

    if source is not None:
        files = [Path(source)] if Path(source).is_file() else source_images(source, "val")
        return files[:limit], str(source)
    if data is not None:
        return source_images(data, "val")[:limit], f"{data} (val split)"
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(4)], "random 640x480 images"


def _calibration_folder(items: list, work: Path) -> Path:
    """A folder of the timed images as files, for INT8 calibration when no data set is given (timing only)."""
    import cv2  # noqa: PLC0415

    folder = work / "calibration_images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(items):
        if isinstance(item, (str, Path)):
            (folder / f"{i:03d}{Path(item).suffix}").write_bytes(Path(item).read_bytes())
        else:
            cv2.imwrite(str(folder / f"{i:03d}.png"), item[:, :, ::-1])
    return folder


def bench_all(model, work: str | Path, *, source: str | Path | None = None, data: str | Path | None = None,
              threads: int | None = None, device: str = "cpu", blocks: int = 5, runs: int = 6,
              calib_images: int = 32) -> dict:
    """Build every path of `model` and time them end to end side by side; the result with a Markdown table."""
    from yolonas.deploy.benchmark import compare, compare_markdown  # noqa: PLC0415

    work = Path(work)
    items, what = _items(source, data)
    calib = data if data is not None else _calibration_folder(items, work)
    backends, skipped = build_paths(model, work / "files", calib, threads=threads, device=device,
                                    calib_images=calib_images)
    predictors = {name: Predictor(backend, batch_size=1) for name, backend in backends.items()}
    results = compare(predictors, items, baseline=BASELINE, blocks=blocks, runs=runs)
    h, w = model.preprocessing.image_size
    note = (f"Batch 1, {h}x{w} input, {threads or torch.get_num_threads()} threads; end to end from "
            f"{'an image file (decoded per call)' if isinstance(items[0], (str, Path)) else 'a decoded image'}: "
            f"{what}; {blocks} blocks of {runs} runs, the paths taking turns; medians of block medians. INT8 "
            f"calibrated on {'the data set' if data is not None else 'the timed images (for timing only)'}.")
    return {"cpu": cpu_info().to_dict(), "images": what, "threads": threads or torch.get_num_threads(),
            "input": [h, w], "blocks": blocks, "runs": runs, "fastest": results[0].name,
            "paths": [r.to_dict() for r in results],
            "skipped": skipped, "markdown": compare_markdown(results, BASELINE, skipped, note)}
