"""Accuracy kept on the fast CPU paths: a trained checkpoint's AP through `yolonas val`'s evaluator on its fp32 ONNX
Runtime export, OpenVINO f32 and bf16, and INT8 (NNCF's and our QDQ file, on OpenVINO; QDQ on ONNX Runtime), each
INT8 over several calibration seeds, plain and selective (the float layers a sensitivity report ranks worst, chosen
once on seed 0 and kept for every seed). Then the INT8 files of seed 0 timed side by side (accuracy at equal speed).
Writes benchmarks/results/openvino_accuracy_<tag>.{json,md}.

    python benchmarks/openvino_accuracy.py --weights runs/train/s320_aq/weights/best.pt \
        --data ../shared/datasets/aquarium/data.yaml --split test --tag aquarium_s320
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from _common import RESULTS, machine
from yolonas.data import open_dataset
from yolonas.deploy.backends import OnnxRuntimeBackend, OpenVINOBackend
from yolonas.deploy.benchmark import compare
from yolonas.deploy.export import export_onnx, export_openvino
from yolonas.deploy.timing import cpu_info
from yolonas.eval.validate import validate
from yolonas.infer.predictor import Predictor
from yolonas.quant.config import QuantConfig
from yolonas.quant.pipeline import quantize
from yolonas.weights import load


def score(backend, dataset) -> dict:
    m = validate(backend, dataset, batch_size=1)
    return {k: getattr(m, k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}


def int8_variants(args, onnx_fp32: Path, work: Path, float_layers: list[str]) -> dict[str, dict[int, Path]]:
    """variant -> seed -> INT8 file, for every quantizer, plain and with the selective float layers."""
    out: dict[str, dict[int, Path]] = {}
    for seed in args.seeds:
        for fmt, quantizer in (("openvino", "nncf"), ("openvino", "qdq"), ("onnx", "qdq")):
            runtime = "openvino" if fmt == "openvino" else "onnxruntime"
            for kind, layers in (("ptq", []), ("selective", float_layers)):
                name = f"{runtime} int8 {quantizer} {kind}"
                folder = work / f"{runtime}_{quantizer}_{kind}_{seed}"
                r = quantize(onnx_fp32, QuantConfig(args.data, folder, fmt=fmt, quantizer=quantizer, seed=seed,
                                                    calib_images=args.calib_images, val_images=0,
                                                    float_layers=layers, threads=args.threads))
                out.setdefault(name, {})[seed] = Path(r.output)
                print(f"{name} seed {seed}: {r.output}", file=sys.stderr)
    return out


def selective_layers(args, onnx_fp32: Path, work: Path) -> tuple[list[str], dict]:
    """The float convs a leave-one-out sensitivity report and the speed budget choose (seed 0)."""
    r = quantize(onnx_fp32, QuantConfig(args.data, work / "selection", mode="selective", seed=0,
                                        calib_images=args.calib_images, val_images=args.val_images,
                                        min_speedup=args.min_speedup, threads=args.threads))
    return r.selection.float_layers, r.selection.to_dict()


def backend_for(path: Path, threads: int, precision: str | None = None):
    if path.suffix == ".xml" or precision is not None:
        return OpenVINOBackend(path, threads=threads, precision=precision)
    return OnnxRuntimeBackend(path, threads=threads)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(args, res: dict) -> str:
    fp32 = res["float"]["onnxruntime fp32"]["AP"]
    lines = [f"# Accuracy on the fast CPU paths: {args.weights} on {args.data} ({args.split})", "",
             f"{cpu_info().describe()}. AP through `yolonas val`'s evaluator (the same Predictor); INT8 over "
             f"calibration seeds {args.seeds} ({args.calib_images} images of the train split each); selective = "
             f"the {len(res['float_layers'])} convs a sensitivity report keeps float at >= {args.min_speedup:.0%} of "
             "full INT8's speed-up (chosen on seed 0, kept for every seed).", "",
             "| path | AP | AP50 | AP - fp32 (points) |", "|---|---|---|---|"]
    for name, m in res["float"].items():
        lines.append(f"| {name} | {m['AP']:.4f} | {m['AP50']:.4f} | {(m['AP'] - fp32) * 100:+.2f} |")
    for name, per_seed in res["int8"].items():
        ap, sd = mean_sd([m["AP"] for m in per_seed.values()])
        ap50, _ = mean_sd([m["AP50"] for m in per_seed.values()])
        lines.append(f"| {name} | {ap:.4f} ± {sd:.4f} | {ap50:.4f} | {(ap - fp32) * 100:+.2f} ± {sd * 100:.2f} |")
    if res.get("timing"):
        lines += ["", "INT8 files of seed 0 timed side by side (end to end from image files, batch 1, "
                  f"{args.threads} threads):", "", "| path | end to end (ms) |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in res["timing"].items()]
    lines += ["", f"Float layers: {', '.join(res['float_layers']) or 'none'}", "",
              f"Command: `python {' '.join(sys.argv)}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--val-images", type=int, default=16)
    ap.add_argument("--min-speedup", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--tag", default="aquarium")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data, args.split)
    res: dict = {"machine": machine(), "args": vars(args), "float": {}, "int8": {}}
    with tempfile.TemporaryDirectory(prefix="yolonas-ovacc-") as tmp:
        work = Path(tmp)
        onnx_fp32 = export_onnx(load(args.weights), work / "fp32.onnx", batch=1)
        ir_f32 = export_openvino(onnx_fp32, work / "f32.xml")
        ir_bf16 = export_openvino(onnx_fp32, work / "bf16.xml", precision="bf16")
        for name, path in (("onnxruntime fp32", onnx_fp32), ("openvino f32", ir_f32), ("openvino bf16", ir_bf16)):
            res["float"][name] = score(backend_for(path, args.threads), dataset)
            print(f"{name}: AP {res['float'][name]['AP']:.4f}", file=sys.stderr)
        res["float_layers"], res["selection"] = selective_layers(args, onnx_fp32, work)
        files = int8_variants(args, onnx_fp32, work, res["float_layers"])
        for name, per_seed in files.items():
            res["int8"][name] = {seed: score(backend_for(p, args.threads), dataset) for seed, p in per_seed.items()}
            print(f"{name}: AP {[round(m['AP'], 4) for m in res['int8'][name].values()]}", file=sys.stderr)
        timed = {"onnxruntime fp32": backend_for(onnx_fp32, args.threads),
                 "openvino bf16": backend_for(ir_bf16, args.threads)}
        timed.update({name: backend_for(per_seed[args.seeds[0]], args.threads) for name, per_seed in files.items()})
        images = sorted(dataset.image_files)[:16]
        predictors = {name: Predictor(backend, batch_size=1) for name, backend in timed.items()}
        timed_paths = compare(predictors, images, blocks=args.blocks, runs=args.runs)
        res["timing"] = {r.name: r.end_to_end_ms for r in timed_paths}
    out = RESULTS / f"openvino_accuracy_{args.tag}"
    Path(f"{out}.json").write_text(json.dumps(res, indent=2) + "\n")
    text = markdown(args, res)
    Path(f"{out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
