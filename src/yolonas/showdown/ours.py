"""Our side of a showdown: train one YOLO-NAS model, count it, score it in fp32 and INT8 (NNCF OpenVINO IR), export
its fp32 ONNX file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from yolonas.arch.summary import summarize
from yolonas.deploy.backends import load_backend
from yolonas.deploy.export import export_onnx
from yolonas.deploy.timing import cpu_info, torch_threads
from yolonas.eval.validate import validate
from yolonas.infer import Predictor
from yolonas.infer.postprocess import VAL_NMS
from yolonas.quant.config import QuantConfig
from yolonas.quant.pipeline import quantize
from yolonas.showdown.clock import TRAIN_FIELDS, TrainClock, TrainingStopped, parts_record
from yolonas.showdown.config import ShowdownConfig
from yolonas.showdown.probe import PROBE_EPOCHS, PROBE_PLAIN
from yolonas.train import apply_overrides, load_recipe, train
from yolonas.weights import load


def _train_overrides(model: str, cfg: ShowdownConfig, epochs: int, out: Path, seed: int) -> dict:
    """The recipe fields a showdown sets: the same data, size, batch, seed and epochs as the peer."""
    overrides = {"data.path": cfg.data, "data.train_split": cfg.train_split, "data.val_split": cfg.split,
                 "data.image_size": cfg.imgsz, "data.batch_size": cfg.batch, "data.workers": cfg.workers,
                 "schedule.epochs": epochs, "model.name": model, "run.project": str(out), "run.name": "train",
                 "run.exist_ok": True, "run.device": cfg.device, "run.seed": seed, "run.plots": False,
                 # the last weights are scored, as for YOLOv8: no picking of a best epoch on the eval split
                 "run.val_every": 0}
    if (out / "train" / "weights" / "last.pt").is_file():
        overrides["run.resume"] = True  # a call that was cut off mid-training: its last.pt keeps its epochs
    return overrides


PRECISION = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}


def _clocked(model: str, clock: TrainClock, stop_after: int | None):
    """The trainer's end-of-epoch call: the clock notes the saved epoch, then a stop asked for is raised."""

    def on_epoch_end(trainer, epoch: int) -> None:
        clock.epoch_end(trainer.start_epoch, epoch, PRECISION[trainer.amp_dtype])
        if stop_after is not None and stop_after <= epoch < trainer.cfg.schedule.epochs:
            raise TrainingStopped(f"{model}: stopped after epoch {epoch} of {trainer.cfg.schedule.epochs} "
                                  f"({clock.folder}); the next call resumes it")

    return on_epoch_end


def train_ours(model: str, cfg: ShowdownConfig, epochs: int, out: Path, seed: int, extra: dict | None = None,
               stop_after: int | None = None) -> dict:
    """Train (or resume) one model into `out` with our recipe (and `extra` overrides); {last, epochs, and the
    training fields of its clock's parts}, kept in train_done.json so that a call cut off during evaluation does not
    train again. Stops with TrainingStopped once epoch `stop_after` is saved."""
    done = out / "train_done.json"
    if done.is_file():
        return json.loads(done.read_text())
    clock = TrainClock(out, cpu_info().describe(), torch.get_num_threads(), cfg.clock)
    recipe = apply_overrides(load_recipe(cfg.our_recipe()), {**_train_overrides(model, cfg, epochs, out, seed),
                                                            **(extra or {})})
    result = train(recipe, _clocked(model, clock, stop_after))
    record = {"last": str(result.last), "epochs": result.epochs, **parts_record(clock.finish(result.epochs))}
    done.write_text(json.dumps(record) + "\n")
    return record


def probe_ours(model: str, cfg: ShowdownConfig, out: Path, threads: int, seed: int) -> tuple[list[dict], int]:
    """Train the probe (probe.py) into `out` on `threads` threads, as the real run trains but for PROBE_EPOCHS, the
    last PROBE_PLAIN without mosaic; nothing after training. Its clock's parts, and the real run's epochs without
    mosaic (the recipe's)."""
    with torch_threads(threads):
        record = train_ours(model, cfg, PROBE_EPOCHS, out, seed, {"schedule.close_mosaic_epochs": PROBE_PLAIN})
    return record["train_parts"], load_recipe(cfg.our_recipe()).schedule.close_mosaic_epochs


def eval_device(cfg: ShowdownConfig) -> str:
    """The device evaluation runs on: --device, with auto meaning cuda when there is one."""
    if cfg.device != "auto":
        return cfg.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def score_fp32(last: Path, cfg: ShowdownConfig, dataset, device: str, out: Path) -> dict:
    """Count the trained model, fuse it, score it in fp32 and export its fp32 ONNX file; the row's fields."""
    net = load(str(last)).eval()
    stats = summarize(net, cfg.imgsz)
    net.fuse()
    fp32 = validate(net, dataset, batch_size=cfg.batch, device=device, save_predictions=out / "pred_fp32.json")
    onnx_fp32 = export_onnx(net.cpu(), out / "model_fp32.onnx", batch=1)
    return {"AP": fp32.AP, "AP50": fp32.AP50, "APs": fp32.APs, "APm": fp32.APm, "APl": fp32.APl,
            "params": stats["params_fused"], "gflops": stats["gflops_fused"], "onnx_fp32": str(onnx_fp32)}


def score_int8(onnx_fp32: Path, cfg: ShowdownConfig, dataset, out: Path, threads: int, seed: int) -> dict:
    """Quantize the fp32 ONNX file to an OpenVINO IR with NNCF (our fastest INT8 path on the CPU: PTQ on train
    images) and score the IR through OpenVINO; the row's fields."""
    q = quantize(str(onnx_fp32), QuantConfig(cfg.data, out / "quant", output=out / "model_int8.xml",
                                             split=cfg.train_split, mode="ptq", fmt="openvino",
                                             calib_images=cfg.calib_images, val_images=0, seed=seed, threads=threads))
    ir = Path(q.output)
    predictor = Predictor(load_backend(ir, threads=threads), nms=VAL_NMS, batch_size=1)
    int8 = validate(predictor, dataset, batch_size=1, save_predictions=out / "pred_int8.json")
    return {"AP_int8": int8.AP, "AP50_int8": int8.AP50, "int8_ir": str(ir),
            "int8_recipe": f"yolonas quantize --format openvino: NNCF PTQ, {q.activations} preset (int8 "
                           "per-channel symmetric weights, int8 symmetric per-tensor activations), box decode float; "
                           f"{cfg.calib_images} train images (seed {seed})"}


def run_ours(model: str, cfg: ShowdownConfig, epochs: int, out: Path, dataset, threads: int, seed: int) -> dict:
    """Train, evaluate (fp32 and INT8) and count one of our models on `threads` CPU threads (the Ultralytics child
    gets the same number), torch's own count given back after; its ShowdownRow fields (time_together
    times it)."""
    with torch_threads(threads):
        record = train_ours(model, cfg, epochs, out, seed, stop_after=cfg.stop_after_epochs)
        t1 = time.perf_counter()
        device = eval_device(cfg)
        fields = score_fp32(Path(record["last"]), cfg, dataset, device, out)
        if cfg.int8:
            fields.update(score_int8(Path(fields["onnx_fp32"]), cfg, dataset, out, threads, seed))
    train_fields = {k: record.get(k) for k in TRAIN_FIELDS}
    fields.update({**train_fields, "epochs": record.get("epochs", epochs), "after_s": time.perf_counter() - t1,
                   "device": device, "recipe": cfg.our_recipe()})
    return fields
