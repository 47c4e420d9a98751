"""Small objects in large images: one checkpoint evaluated whole-image and tiled, against SAHI driving the same model.

For each setting: AP, AP50, AP small/medium/large through `yolonas val`'s evaluator, and milliseconds per image end
to end (decoded image in, merged boxes out), timed in interleaved blocks (medians over blocks). SAHI's
`get_sliced_prediction` runs the same model through our adapter (`yolonas.deploy.sahi_model`) with the same tiles,
merge and thresholds, scored by the same evaluator and timed in the same blocks. With `--int8`, an OpenVINO INT8 IR
of the checkpoint (NNCF, calibrated on whole training images, as `yolonas quantize` does) runs the same tiles: AP
and boxes against the checkpoint's. Writes benchmarks/results/tiling_<tag>.{json,md}.

    python benchmarks/tiling.py --weights runs/train/aerial_tile640/weights/best.pt \
        --data ../shared/datasets/aerial_cars_minsk/data.yaml --split test --tiles 1280,1600 --tag aerial
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from _common import RESULTS, machine
from yolonas.data import open_dataset
from yolonas.deploy.open import open_backend
from yolonas.deploy.timing import cycling, time_blocks
from yolonas.eval.coco import coco_metrics
from yolonas.eval.validate import predict_dataset
from yolonas.infer import Predictor
from yolonas.infer.postprocess import VAL_NMS
from yolonas.infer.tiling import TileConfig

KEYS = ("AP", "AP50", "APs", "APm", "APl")


def summary(m) -> dict:
    """AP, AP50, AP by size, and AP per class (the mean over classes weighs a class of one box like cars)."""
    return {**{k: getattr(m, k) for k in KEYS}, "per_class": dict(m.per_class)}


def scores(predictor: Predictor, dataset) -> tuple[dict, list[dict]]:
    """The evaluator's numbers and the COCO results of a predictor on the data set."""
    results = predict_dataset(predictor, dataset, batch_size=1)
    return summary(coco_metrics(dataset.to_coco(), results)), results


def sahi_runner(backend, cfg: TileConfig, batch: int):
    """fn(image) -> SAHI's merged predictions, and a converter to COCO results; same tiles, merge, thresholds."""
    from sahi.predict import get_sliced_prediction  # noqa: PLC0415

    from yolonas.deploy.sahi_model import YoloNasSahiModel  # noqa: PLC0415

    model = YoloNasSahiModel(model=backend, confidence_threshold=VAL_NMS.score_threshold, nms=VAL_NMS, device="cpu",
                             batch_size=batch)
    # GREEDYNMM by IoS is SAHI's default; its NMS is here given our IoU threshold, so that it is our NMS.
    postprocess, metric, threshold = (("GREEDYNMM", "IOS", cfg.match_threshold) if cfg.merge == "greedynmm"
                                      else ("NMS", "IOU", VAL_NMS.iou_threshold))

    def run(image: np.ndarray):
        return get_sliced_prediction(image, model, cfg.size, cfg.size, cfg.overlap, cfg.overlap,
                                     perform_standard_pred=cfg.whole_image, postprocess_type=postprocess,
                                     postprocess_match_metric=metric, postprocess_match_threshold=threshold,
                                     force_postprocess_type=True, verbose=0, batch_size=batch)
    return run


def sahi_scores(run, dataset, images: list[np.ndarray]) -> dict:
    results = []
    for i, image in enumerate(images):
        for p in run(image).object_prediction_list:
            x1, y1, x2, y2 = p.bbox.to_xyxy()
            results.append({"image_id": int(dataset.image_ids[i]), "category_id": dataset.category_ids[p.category.id],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(p.score.value)})
    return summary(coco_metrics(dataset.to_coco(), results))


def box_agreement(a: list[dict], b: list[dict], min_score: float = 0.25) -> float:
    """Of b's confident boxes, the fraction a finds too (same image and class, IoU > 0.5, score > min_score)."""
    def rows(rs: list[dict], image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        sel = [r for r in rs if r["image_id"] == image_id and r["score"] > min_score]
        xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in sel)]).reshape(-1, 4)
        return xyxy, torch.tensor([r["category_id"] for r in sel])

    found = total = 0
    for image_id in {r["image_id"] for r in b}:
        (ba, ca), (bb, cb) = rows(a, image_id), rows(b, image_id)
        total += len(bb)
        if len(ba) and len(bb):
            found += int(((box_iou(bb, ba) > 0.5) & (cb[:, None] == ca[None, :])).any(1).sum())
    return found / max(total, 1)


def int8_backend(args, work: Path):
    """An NNCF INT8 OpenVINO IR of the checkpoint, calibrated as `yolonas quantize` calibrates (training images)."""
    from yolonas.deploy.backends import OpenVINOBackend  # noqa: PLC0415
    from yolonas.quant.pipeline import quantize  # noqa: PLC0415

    r = quantize(args.weights, args.data, work / "int8", fmt="openvino", calib_images=args.calib_images,
                 val_images=0, threads=torch.get_num_threads())
    return OpenVINOBackend(r["output"], threads=torch.get_num_threads()), r["output"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--tiles", default="1280", help="tile sizes in original pixels, comma-separated")
    p.add_argument("--overlap", type=float, default=0.2)
    p.add_argument("--whole-imgsz", type=int, default=0, help="also whole images at this (larger) input size")
    p.add_argument("--sahi-batch", type=int, default=8, help="SAHI's batch_size besides its default 1")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--tag", default="aerial")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)

    dataset = open_dataset(args.data, args.split)
    images = [dataset.load_image(i) for i in range(len(dataset))]
    backend = open_backend(args.weights)
    imgsz = backend.preprocessing.image_size[0]
    sizes = [int(s) for s in args.tiles.split(",")]
    settings: dict[str, Predictor] = {f"whole image, {imgsz} px input": Predictor(backend, nms=VAL_NMS)}
    if args.whole_imgsz:
        bigger = open_backend(args.weights, imgsz=args.whole_imgsz)
        settings[f"whole image, {args.whole_imgsz} px input"] = Predictor(bigger, nms=VAL_NMS)
    for size in sizes:
        settings[f"tiles {size}, nms"] = Predictor(backend, nms=VAL_NMS, tiles=TileConfig(size, args.overlap))
    first = TileConfig(sizes[0], args.overlap)
    # match_threshold 1: no cut-off part is absorbed (IoS > 1 never holds), i.e. plain NMS over all tiles' boxes
    settings[f"tiles {sizes[0]}, nms without the border rule"] = Predictor(
        backend, nms=VAL_NMS, tiles=TileConfig(sizes[0], args.overlap, match_threshold=1.0))
    settings[f"tiles {sizes[0]}, greedynmm"] = Predictor(
        backend, nms=VAL_NMS, tiles=TileConfig(sizes[0], args.overlap, merge="greedynmm"))
    rows, results = {}, {}
    for label, predictor in settings.items():
        rows[label], results[label] = scores(predictor, dataset)
        print(f"{label}: {rows[label]}", file=sys.stderr)

    fns = {label: cycling(lambda im, pr=pr: pr.predict_arrays([im]), images) for label, pr in settings.items()}
    sahi_cfgs = {f"SAHI tiles {sizes[0]}, {merge}{f', batch {batch}' * (batch != 1)}":
                 (TileConfig(sizes[0], args.overlap, merge=merge), batch)
                 for merge, batch in (("nms", 1), ("nms", args.sahi_batch), ("greedynmm", 1))}
    for label, (cfg, batch) in sahi_cfgs.items():
        run = sahi_runner(backend, cfg, batch)
        rows[label] = sahi_scores(run, dataset, images)
        fns[label] = cycling(run, images)
        print(f"{label}: {rows[label]}", file=sys.stderr)

    int8_file = None
    if args.int8:
        with tempfile.TemporaryDirectory() as tmp:
            backend, int8_file = int8_backend(args, Path(tmp))
            int8 = Predictor(backend, nms=VAL_NMS, tiles=first)
            label = f"INT8 OpenVINO, tiles {sizes[0]}, nms"
            rows[label], results[label] = scores(int8, dataset)
            rows[label]["boxes_agree"] = box_agreement(results[label], results[f"tiles {sizes[0]}, nms"])
            fns[label] = cycling(lambda im: int8.predict_arrays([im]), images)
            timings = time_blocks(fns, blocks=args.blocks, runs=len(images), warmup=1)
    else:
        timings = time_blocks(fns, blocks=args.blocks, runs=len(images), warmup=1)
    for label in rows:
        rows[label]["ms_per_image"] = timings.median(label)
    write(args, rows, timings, int8_file)


def ratio_pairs(rows: dict, size: str) -> list[tuple[str, str]]:
    """(SAHI setting, our setting running the same merge) pairs, and the tiles against the whole image."""
    pairs = [(f"SAHI tiles {size}, nms", f"tiles {size}, nms without the border rule"),
             (f"SAHI tiles {size}, nms", f"tiles {size}, nms"),
             (f"SAHI tiles {size}, greedynmm", f"tiles {size}, greedynmm")]
    pairs += [(k, f"tiles {size}, nms") for k in rows if k.startswith(f"SAHI tiles {size}, nms, batch")]
    pairs += [(k, f"tiles {size}, nms") for k in rows if k.startswith("INT8")]
    return [(a, b) for a, b in pairs if a in rows and b in rows]


def write(args, rows: dict, timings, int8_file) -> None:
    size = args.tiles.split(",")[0]
    classes = sorted({c for r in rows.values() for c in r["per_class"]})
    out = {"machine": machine(), "weights": args.weights, "data": args.data, "split": args.split,
           "overlap": args.overlap, "int8_file": int8_file, "rows": rows,
           "timing": timings.to_dict(),
           "time_ratios": {f"{a} / {b}": timings.ratio(a, b) for a, b in ratio_pairs(rows, size)}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"tiling_{args.tag}.json").write_text(json.dumps(out, indent=2))
    lines = [f"# Tiled inference on {Path(args.data).parent.name} ({args.split})", "",
             f"{machine()['cpu_info']['name']}, {machine()['threads']} threads; weights `{args.weights}`; overlap "
             f"{args.overlap:g}; ms per image end to end, median of {args.blocks} interleaved blocks. Merges: ours "
             "`nms` (cut-off parts absorbed by the larger box that goes on past the tile border, then NMS at IoU "
             "0.7), the same without that rule (plain NMS over all tiles' boxes), `greedynmm` (SAHI's GREEDYNMM, IoS "
             "0.5); SAHI's `nms` is its NMS by IoU 0.7 (our threshold), its `greedynmm` its default GREEDYNMM by IoS "
             "0.5; SAHI's batch_size 1 (its default) unless said. Thresholds: score 0.01, 300 boxes per tile.", "",
             f"| setting | AP | AP50 | AP small | AP medium | AP large | {' | '.join(f'AP {c}' for c in classes)} "
             "| ms / image |", "|---" * (7 + len(classes)) + "|"]
    for label, r in rows.items():
        per_class = " | ".join(f"{r['per_class'].get(c, 0):.4f}" for c in classes)
        lines.append(f"| {label} | {r['AP']:.4f} | {r['AP50']:.4f} | {r['APs']:.4f} | {r['APm']:.4f} | "
                     f"{r['APl']:.4f} | {per_class} | {r['ms_per_image']:.0f} |")
    lines += ["", "Time per image, median of per-block ratios: "
              + "; ".join(f"{k} x{v:.2f}" for k, v in out["time_ratios"].items())]
    agree = [r for r in rows.values() if "boxes_agree" in r]
    if agree:
        lines.append(f"INT8: {agree[0]['boxes_agree']:.1%} of the checkpoint's boxes above 0.25 found again "
                     "(same class, IoU > 0.5).")
    (RESULTS / f"tiling_{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
