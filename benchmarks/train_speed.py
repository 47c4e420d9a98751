"""Training throughput: images/s of the trainer's optimizer step (forward, PPYoloE loss, backward, AdamW, EMA).

Two numbers per case: `step` times `Trainer.train_step` on one ready batch (the model's and loss's cost alone),
`epoch` times `Trainer.train_epoch` over a generated data set (loading and augmentation included, with the given
workers). Cases: yolo_nas_tiny and yolo_nas_s at a small size on CPU; on CUDA also yolo_nas_s at 640 with AMP.
Writes benchmarks/results/train_speed.json and .md (or --out NAME).

Usage: python benchmarks/train_speed.py [--device cpu|cuda|auto] [--steps 8] [--workers 2] [--out train_speed]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402
from yolonas.data.synthetic import make_synthetic_dataset  # noqa: E402
from yolonas.train import Trainer, apply_overrides, load_recipe  # noqa: E402

# (model, size, batch, device, AMP, channels_last)
CPU_CASES = [("yolo_nas_s", 64, 2, "cpu", "off", False), ("yolo_nas_tiny", 320, 8, "cpu", "off", False),
             ("yolo_nas_s", 320, 4, "cpu", "off", False)]
CUDA_CASES = [("yolo_nas_tiny", 640, 32, "cuda", "bf16", False),
              *(("yolo_nas_s", 640, 16, "cuda", amp, False) for amp in ("off", "fp16", "bf16")),
              ("yolo_nas_s", 640, 16, "cuda", "bf16", True),
              ("yolo_nas_s", 640, 32, "cuda", "bf16", False), ("yolo_nas_s", 640, 32, "cuda", "bf16", True)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SYNCS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::nonzero")
HOST_READS_OK_INSIDE = {"aten::_fused_adamw_", "aten::_fused_adam_", "aten::_fused_sgd_"}  # CPU step counters


def _inside(event, names: set[str]) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def dispatch_profile(trainer: Trainer, batch: dict) -> dict:
    """aten ops dispatched by one step and by forward + backward alone, and the step's host synchronisations."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU]) as step:
        trainer.train_step(batch, 0)
    images = batch["images"].to(trainer.device).float().div(255).contiguous(memory_format=trainer.memory_format)
    with profile(activities=[ProfilerActivity.CPU]) as fb:
        out = trainer.net(images)
        (out.cls_logits.float().sum() + out.reg_distri.float().sum()).backward()
    trainer.grads.zero_()
    ops = sum(e.name.startswith("aten::") for e in step.events())
    fb_ops = sum(e.name.startswith("aten::") for e in fb.events())
    syncs = sum(e.name in SYNCS and not _inside(e, HOST_READS_OK_INSIDE) for e in step.events())
    return {"ops_per_step": ops, "ops_forward_backward": fb_ops, "ops_ratio": round(ops / fb_ops, 2),
            "syncs_per_step": syncs}


def measure(model: str, size: int, batch: int, device: str, amp: str, channels_last: bool, steps: int, workers: int,
            folder: Path) -> dict:
    """Images/s of one case: ready-batch steps, then one full epoch."""
    data = make_synthetic_dataset(folder / f"shapes{size}", n_images=batch * steps, n_val=4, size=size, seed=0)
    cfg = apply_overrides(load_recipe("coco_yolo_nas_s"), {
        "data": str(data), "model": model, "imgsz": size, "batch": batch, "epochs": 2, "workers": workers,
        "device": device, "amp": amp != "off", "run.amp_dtype": "auto" if amp == "off" else amp,
        "project": str(folder / "runs"), "name": f"{model}_{size}_{batch}", "run.plots": False, "run.verbose": False,
        "augmentation.mosaic": 1.0, "run.channels_last": channels_last})
    trainer = Trainer(cfg)
    batch_data = next(iter(trainer.loader))
    trainer.net.train()
    for _ in range(3):  # warm-up: allocator, cuDNN / oneDNN kernel choice
        trainer.train_step(batch_data, 0)
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch_data, 0)
    sync(trainer.device)
    step_s = (time.perf_counter() - t0) / steps
    dispatch = dispatch_profile(trainer, batch_data)

    t0 = time.perf_counter()
    trainer.train_epoch(0)
    sync(trainer.device)
    epoch_s = time.perf_counter() - t0
    images = len(trainer.loader) * batch
    result = {"model": model, "size": size, "batch": batch, "device": str(trainer.device),
              "amp": {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[trainer.amp_dtype],
              "channels_last": trainer.memory_format == torch.channels_last,
              "step_images_per_s": round(batch / step_s, 2), "step_ms": round(step_s * 1e3, 1),
              "epoch_images_per_s": round(images / epoch_s, 2), "epoch_images": images, "workers": workers,
              **dispatch}
    if trainer.device.type == "cuda":
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated(trainer.device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(trainer.device)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="train_speed")
    args = ap.parse_args()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(*case, args.steps, args.workers, Path(tmp)) for case in (CUDA_CASES if cuda else CPU_CASES)]

    info = machine()
    if cuda:
        info["gpu"] = torch.cuda.get_device_name()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"machine": info, "results": results}, indent=2))
    lines = [f"# Training throughput ({'CUDA' if cuda else 'CPU'})", "",
             "`step`: `Trainer.train_step` on one ready batch (forward, PPYoloE loss, backward, AdamW, EMA). "
             "`epoch`: `Trainer.train_epoch` over a generated data set, mosaic + affine + HSV + flip + mixup, "
             f"{args.workers} loader workers. Machine: {info.get('gpu', info['cpu'])}, {info['threads']} threads, "
             f"torch {info['torch']}.", "",
             "| model | size | batch | device | AMP | channels_last | step images/s | step ms | epoch images/s "
             "| aten ops / step (x forward+backward) | syncs / step |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['size']} | {r['batch']} | {r['device']} | {r['amp']} | "
                     f"{r['channels_last']} | {r['step_images_per_s']} | {r['step_ms']} | {r['epoch_images_per_s']} "
                     f"| {r['ops_per_step']} (x{r['ops_ratio']}) | {r['syncs_per_step']} |")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
