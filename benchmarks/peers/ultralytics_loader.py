"""Ultralytics' own training data loader on the CPU: the loader peer of benchmarks/dataloader.py (issue 18).

Run inside .venv-ultralytics (benchmarks/peers/ultralytics_setup.sh). The loader is built the way Ultralytics'
DetectionTrainer builds it: `build_yolo_dataset(cfg, img_path, batch, data, mode="train")` (a `YOLODataset` with
`augment=True`, rect off, image cache off) on `get_cfg(DEFAULT_CFG, overrides)`, then
`build_dataloader(dataset, batch, workers, shuffle=True, device="cpu")` (its `InfiniteDataLoader`: persistent
workers, prefetch 4 batches per worker, across epochs). The overrides only set the augmentation set that
benchmarks/dataloader.py matches to ours (see `--help`); the rest is DEFAULT_CFG.

The data set is a copy of the data.yaml under .venv-ultralytics/work/loader/<folder>/ whose images and labels are
per-file links, so Ultralytics' `labels.cache` lands there and never in the shared data set.

--serve: after a `ready` JSON line, one command per stdin line; `epoch` runs one pass over the loader
(len(loader) batches) and answers one JSON line: images, batches, seconds, images_per_s, first_batch_s; `quit` or
EOF ends it. stdout carries these JSON lines only.

    .venv-ultralytics/bin/python benchmarks/peers/ultralytics_loader.py --serve --workers 2 < commands
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml
from _offline import NETWORK_ATTEMPTS, REPO, WORK, go_offline, settings


def _datasets_root() -> Path:
    return Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))


# ------------------------------------------------------------------------------------------------ data set copy


def linked_data(src: Path, out: Path) -> Path:
    """A copy of the data.yaml `src` at out/data.yaml whose splits are per-file links to its images and labels.

    Ultralytics derives the labels folder from each image path (`images` -> `labels`) and writes `labels.cache`
    beside it; links per file (not per folder, which it would resolve) keep that cache under `out`.
    """
    data = yaml.safe_load(src.read_text())
    root = (src.parent / data.get("path", ".")).resolve()
    new = {"path": str(out), "nc": data["nc"], "names": data["names"]}
    for split in ("train", "val", "test"):
        if isinstance(data.get(split), str):
            new[split] = str(_link_split(root / data[split], out / split))
    out.mkdir(parents=True, exist_ok=True)
    target = out / "data.yaml"
    target.write_text(yaml.safe_dump(new, sort_keys=False))
    return target


def _link_split(images: Path, out: Path) -> Path:
    """Link every image of `images` and its label file into out/images and out/labels; returns out/images."""
    labels = images.parent / "labels"
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for image in sorted(p for p in images.iterdir() if p.is_file()):
        _link(out / "images" / image.name, image.resolve())
        label = labels / f"{image.stem}.txt"
        if label.is_file():
            _link(out / "labels" / label.name, label.resolve())
    return out / "images"


def _link(link: Path, target: Path) -> None:
    if not link.is_symlink():
        link.symlink_to(target)


# ------------------------------------------------------------------------------------------------------ loader


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The DEFAULT_CFG entries this benchmark sets: size, batch, workers, no cache, and the augmentation set."""
    return {"imgsz": args.imgsz, "batch": args.batch, "workers": args.workers, "cache": False, "rect": False,
            "mosaic": args.mosaic, "mixup": args.mixup, "cutmix": 0.0, "copy_paste": 0.0, "degrees": args.degrees,
            "translate": args.translate, "scale": args.scale, "shear": args.shear, "perspective": 0.0,
            "hsv_h": args.hsv_h, "hsv_s": args.hsv_s, "hsv_v": args.hsv_v, "fliplr": args.fliplr, "flipud": 0.0,
            "bgr": args.bgr}


def _no_font_check() -> None:
    """Skip the font look-up of Ultralytics' data.yaml check: a plotting font, fetched from the web when absent."""
    import ultralytics.data.utils as data_utils  # noqa: PLC0415

    data_utils.check_font = lambda font="Arial.ttf": None


def albumentations_off(dataset) -> bool:
    """Switch off Ultralytics' Albumentations step (blur, CLAHE, ... at p 0.01 when the package is installed), which
    has no counterpart in ours; returns whether it was active."""
    from ultralytics.data.augment import Albumentations  # noqa: PLC0415

    active = False
    for t in dataset.transforms.transforms:
        if isinstance(t, Albumentations):
            active = active or t.transform is not None
            t.transform = None
    return active


def build_loader(args: argparse.Namespace, data_yaml: Path):
    """(dataset, loader, cfg) built as DetectionTrainer.build_dataset / get_dataloader build them for training."""
    from ultralytics.cfg import DEFAULT_CFG, get_cfg  # noqa: PLC0415 - only after go_offline()
    from ultralytics.data import build_dataloader, build_yolo_dataset  # noqa: PLC0415
    from ultralytics.data.utils import check_det_dataset  # noqa: PLC0415

    cfg = get_cfg(DEFAULT_CFG, {**overrides(args), "data": str(data_yaml)})
    data = check_det_dataset(str(data_yaml), autodownload=False)
    dataset = build_yolo_dataset(cfg, data["train"], args.batch, data, mode="train", stride=32)
    loader = build_dataloader(dataset, batch=args.batch, workers=args.workers, shuffle=True, rank=-1,
                              device="cpu")
    return dataset, loader, cfg


def process_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system, all threads) used so far by each live process of `pids`, from /proc."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15 of stat
    return out


def loader_pids(loader) -> list[int]:
    """This process and the InfiniteDataLoader's live worker processes."""
    return [os.getpid()] + [w.pid for w in getattr(loader.iterator, "_workers", []) if w.pid is not None]


def run_epoch(loader) -> dict[str, Any]:
    """One pass (len(loader) batches) over the loader: images, batches, seconds, images/s, first batch's latency,
    and CPU ms per image of this process and its workers together."""
    images, batches, first = 0, 0, None
    cpu0 = process_cpu(loader_pids(loader))
    start = time.perf_counter()
    for batch in loader:
        first = first or time.perf_counter()
        images += int(batch["img"].shape[0])
        batches += 1
    seconds = time.perf_counter() - start
    cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in process_cpu(loader_pids(loader)).items())
    return {"images": images, "batches": batches, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1), "first_batch_s": round(first - start, 3),
            "cpu_ms_per_image": round(1000 * cpu / images, 2)}


# ------------------------------------------------------------------------------------------------- serve mode


def _protocol_stream() -> TextIO:
    """A stream on the real stdout for the JSON lines; fd 1 itself then goes to stderr (Ultralytics' logging)."""
    sys.stdout.flush()
    stream = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return stream


def ready_line(args, dataset, loader, cfg, data_yaml: Path, albumentations: bool) -> dict[str, Any]:
    """What the driver records about the peer: versions, the loader as built, the hyperparameters in use."""
    import ultralytics  # noqa: PLC0415

    keys = ("imgsz", "batch", "mosaic", "mixup", "cutmix", "copy_paste", "degrees", "translate", "scale", "shear",
            "perspective", "hsv_h", "hsv_s", "hsv_v", "fliplr", "flipud", "bgr", "cache", "rect")
    return {"event": "ready", "peer": "ultralytics", "mode": "loader", "ultralytics": ultralytics.__version__,
            "data": str(data_yaml), "images": len(dataset), "labels_cache": str(Path(dataset.label_files[0]).parent
                                                                                  .with_suffix(".cache")),
            "workers": args.workers, "num_workers": loader.num_workers, "batch": loader.batch_size,
            "batches_per_epoch": len(loader), "prefetch_factor": loader.prefetch_factor,
            "buffer_images": dataset.max_buffer_length,
            "transforms": [type(t).__name__ for t in dataset.transforms.transforms],
            "albumentations_installed": importlib.util.find_spec("albumentations") is not None,
            "albumentations_active_before_off": albumentations,
            "hyp": {k: getattr(cfg, k) for k in keys}, "network_attempts": NETWORK_ATTEMPTS}


def serve(args: argparse.Namespace) -> None:
    """Build the loader, print the ready line, then answer each `epoch` on stdin with one epoch's JSON line."""
    out = _protocol_stream()
    _no_font_check()
    data_yaml = linked_data(Path(args.data).resolve(), WORK / "loader" / Path(args.data).resolve().parent.name)
    dataset, loader, cfg = build_loader(args, data_yaml)
    albumentations = albumentations_off(dataset)
    out.write(json.dumps(ready_line(args, dataset, loader, cfg, data_yaml, albumentations)) + "\n")
    epochs = 0
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command == "epoch":
            result = {"event": "epoch", "epoch": epochs, "workers": loader.num_workers, **run_epoch(loader),
                      "network_attempts": len(NETWORK_ATTEMPTS)}
            epochs += 1
            out.write(json.dumps(result) + "\n")
        elif command:
            out.write(json.dumps({"event": "error", "error": f"unknown command {command!r}"}) + "\n")
    loader.close()


# -------------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", action="store_true", help="answer `epoch` lines on stdin (else: --epochs and exit)")
    ap.add_argument("--epochs", type=int, default=2, help="without --serve: epochs to run and print")
    ap.add_argument("--data", default=str(_datasets_root() / "aquarium" / "data.yaml"), help="detection data.yaml")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mosaic", type=float, default=1.0)
    ap.add_argument("--mixup", type=float, default=0.0)
    ap.add_argument("--degrees", type=float, default=0.0)
    ap.add_argument("--translate", type=float, default=0.1)
    ap.add_argument("--scale", type=float, default=0.5, help="scale gain: uniform(1 - scale, 1 + scale)")
    ap.add_argument("--shear", type=float, default=0.0)
    ap.add_argument("--hsv-h", type=float, default=0.015)
    ap.add_argument("--hsv-s", type=float, default=0.7)
    ap.add_argument("--hsv-v", type=float, default=0.4)
    ap.add_argument("--fliplr", type=float, default=0.5)
    ap.add_argument("--bgr", type=float, default=0.0, help="RGB <-> BGR swap probability")
    return ap


def main() -> None:
    args = _parser().parse_args()
    go_offline()
    settings()
    if args.serve:
        serve(args)
        return
    _no_font_check()
    data_yaml = linked_data(Path(args.data).resolve(), WORK / "loader" / Path(args.data).resolve().parent.name)
    dataset, loader, _ = build_loader(args, data_yaml)
    albumentations_off(dataset)
    for epoch in range(args.epochs):
        print(json.dumps({"event": "epoch", "epoch": epoch, **run_epoch(loader)}), flush=True)
    loader.close()


if __name__ == "__main__":
    main()
