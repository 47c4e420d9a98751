"""The trainer: recipes and overrides, parameter groups, EMA, the run folder, fine-tuning, bad data."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from yolonas.arch.model import build
from yolonas.arch.spec import yolo_nas_tiny
from yolonas.data.checks import BAD_CLASS, CORRUPT_IMAGE, OUTSIDE, UNPARSABLE
from yolonas.data.coco import CocoDataset
from yolonas.data.synthetic import make_synthetic_dataset
from yolonas.errors import InputError
from yolonas.eval.validate import validate
from yolonas.preprocess import Preprocessing
from yolonas.train import TrainConfig, Trainer, apply_overrides, load_recipe, recipe_names, train
from yolonas.train.ema import ModelEMA
from yolonas.train.optim import build_optimizer, build_scheduler
from yolonas.train.runlog import CSV_COLUMNS, run_folder
from yolonas.weights import load, read_checkpoint, save_checkpoint


def small_config(data: Path, project: Path, **overrides) -> TrainConfig:
    """cpu_smoke at 128 px, batch 4, 1 epoch, without plots' slow confusion matrix only where asked."""
    base = {"data": str(data), "project": str(project), "imgsz": 128, "batch": 4, "epochs": 1, "run.verbose": False}
    return apply_overrides(load_recipe("cpu_smoke"), {**base, **overrides})


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A generated 3-class data set (8 train, 4 val images of 128 px)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("shapes"), n_images=8, n_val=4, size=128, seed=1)


# ------------------------------------------------------------------------------------------ recipes, config


def test_recipes_hold_the_published_values():
    assert set(recipe_names()) >= {"coco_yolo_nas_s", "finetune", "scratch_small_data", "cpu_smoke"}
    coco = load_recipe("coco_yolo_nas_s")
    assert (coco.optimizer.name, coco.optimizer.lr, coco.optimizer.weight_decay) == ("adamw", 2e-4, 1e-5)
    assert (coco.schedule.warmup_steps, coco.schedule.warmup_lr, coco.schedule.final_lr_ratio) == (1000, 1e-6, 0.1)
    assert (coco.schedule.epochs, coco.data.batch_size, coco.ema.decay, coco.run.amp) == (300, 32, 0.9997, True)
    assert (coco.augmentation.mosaic, coco.augmentation.mixup, coco.augmentation.channel_swap) == (0.0, 0.5, 0.5)
    ft = load_recipe("finetune")
    assert (ft.optimizer.lr, ft.optimizer.weight_decay, ft.schedule.warmup_epochs) == (5e-4, 1e-4, 3)
    assert (ft.schedule.epochs, ft.data.batch_size, ft.ema.decay, ft.augmentation.mosaic) == (100, 16, 0.9, 1.0)
    assert (ft.model.name, ft.model.pretrained) == ("yolo_nas_s", "coco")
    assert load_recipe("cpu_smoke").model.name == "yolo_nas_tiny"


def test_overrides_by_alias_and_dotted_path(tmp_path):
    cfg = apply_overrides(load_recipe("finetune"), {"epochs": "7", "lr": 1e-3, "augmentation.scale": "[0.8, 1.2]",
                                                   "ema.enabled": "false", "model": "best.pt", "batch": None,
                                                   "pretrained": "none"})
    assert cfg.schedule.epochs == 7 and cfg.optimizer.lr == 1e-3 and cfg.augmentation.scale == (0.8, 1.2)
    assert cfg.ema.enabled is False and cfg.model.name == "best.pt" and cfg.data.batch_size == 16
    assert cfg.model.pretrained is None
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg  # what config.yaml holds reads back
    with pytest.raises(InputError, match="unknown training option 'epoch'"):
        apply_overrides(cfg, {"epoch": 3})
    with pytest.raises(InputError, match="expected int"):
        apply_overrides(cfg, {"epochs": "many"})
    with pytest.raises(InputError, match="not one of"):
        apply_overrides(cfg, {"optimizer": "adam"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedule:\n  epochs: 3\n  warmup: 2\n")
    with pytest.raises(InputError, match="unknown key 'warmup'"):
        load_recipe(bad)
    with pytest.raises(InputError, match="not a packaged recipe"):
        load_recipe("no_such_recipe")


def test_no_weight_decay_on_bias_bn_and_alpha():
    model = build(yolo_nas_tiny(), 3)
    opt = build_optimizer(model, load_recipe("finetune").optimizer)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert len(decay_of) == sum(1 for _ in model.parameters())  # every parameter in exactly one group
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    for name, p in model.named_parameters():
        no_decay = name.endswith(".bias") or name.endswith("alpha") or id(p) in bn_params
        assert decay_of[id(p)] == (0.0 if no_decay else 1e-4), name
    assert any(n.endswith("alpha") for n, _ in model.named_parameters())


def test_warmup_then_cosine():
    model = nn.Linear(2, 2)
    cfg = load_recipe("coco_yolo_nas_s").schedule
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
    sched = build_scheduler(opt, cfg, 2e-4, steps_per_epoch=10)  # 3000 steps, 1000 of warm-up
    lrs = []
    for _ in range(3000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-6) and lrs[500] == pytest.approx((1e-6 + 2e-4) / 2)
    assert lrs[1000] == pytest.approx(2e-4) and max(lrs) == pytest.approx(2e-4)
    assert lrs[-1] == pytest.approx(2e-5, rel=1e-3)  # cosine down to final ratio 0.1
    assert all(a >= b for a, b in zip(lrs[1000:], lrs[1001:]))


def test_ema_threshold_schedule():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.9997)
    assert ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(10**6) == 0.9997
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # t = 1: ema = d * 0 + (1 - d) * 1
    assert ema.module.weight.item() == pytest.approx(1 - 2 / 11)


# ------------------------------------------------------------------------------------------ runs


def test_run_folder_and_checkpoints(shapes, tmp_path):
    cfg = small_config(shapes, tmp_path, name="exp", epochs=2)
    result = train(cfg)
    run = tmp_path / "exp"
    assert result.run_dir == run and result.best == run / "weights" / "best.pt"
    for name in ("config.yaml", "results.csv", "results.png", "pr_curves.png", "confusion_matrix.png",
                 "weights/best.pt", "weights/last.pt"):
        assert (run / name).is_file(), name
    assert TrainConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text())) == cfg
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[-1]["AP"] != "" and float(rows[-1]["loss"]) > 0

    last = read_checkpoint(run / "weights" / "last.pt")
    assert {"optimizer", "scheduler", "scaler", "ema_state_dict", "rng", "config", "epoch", "step"} <= set(last)
    assert last["epoch"] == 2 and last["step"] == 4
    best = load(run / "weights" / "best.pt")  # self-describing: nothing else needed
    assert best.class_names == ["circle", "rectangle", "triangle"] and best.preprocessing.image_size == (128, 128)
    assert train(cfg).run_dir == tmp_path / "exp2"  # a second run does not overwrite the first


def test_run_folder_takes_the_next_free_name(tmp_path):
    assert run_folder(tmp_path, "a") == tmp_path / "a" and run_folder(tmp_path) == tmp_path / "exp"
    for name in ("a", "exp", "exp2"):
        (tmp_path / name).mkdir()
    assert run_folder(tmp_path, "a") == tmp_path / "a2" and run_folder(tmp_path, "a", exist_ok=True) == tmp_path / "a"
    assert run_folder(tmp_path) == tmp_path / "exp3"


def test_cpu_estimate_suggests_the_cpu_recipe_only_where_it_is_faster():
    said = []
    for recipe, imgsz in (("scratch_small_data", 640), ("cpu_s320", 320)):
        cfg = apply_overrides(load_recipe(recipe), {"imgsz": imgsz})
        fake = SimpleNamespace(device=torch.device("cpu"), loader=[None] * 10, cfg=cfg, log=said.append)
        Trainer._estimate(fake, 2.0, 0)
    assert "20 s per epoch" in said[0] and said[0].endswith("a GPU, a smaller --imgsz or the cpu_s320 recipe is faster")
    assert said[1].endswith("a GPU or a smaller --imgsz is faster") and "cpu_s320" not in said[1]


def test_cpu_trains_in_fp32_unless_bf16_is_asked_for(shapes, tmp_path):
    assert Trainer(small_config(shapes, tmp_path, name="auto", device="cpu", amp=True)).amp_dtype is None
    assert Trainer(small_config(shapes, tmp_path, name="off", device="cpu", amp=False,
                                amp_dtype="bf16")).amp_dtype is None
    assert Trainer(small_config(shapes, tmp_path, name="on", device="cpu", amp=True,
                                amp_dtype="bf16")).amp_dtype == torch.bfloat16
    result = train(small_config(shapes, tmp_path, name="bf16", device="cpu", amp=True, amp_dtype="bf16",
                                  epochs=2))
    with open(result.run_dir / "results.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert all(0 < v < 1e3 for v in losses)  # finite: bf16 autocast, fp32 master weights
    state = read_checkpoint(result.last)["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}


def test_finetune_replaces_only_the_classification_layers(shapes, tmp_path):
    coco = build(yolo_nas_tiny(), 80)
    save_checkpoint(coco, tmp_path / "coco_tiny.pt")
    trainer = Trainer(small_config(shapes, tmp_path, model=str(tmp_path / "coco_tiny.pt")))
    assert trainer.model.class_names == ["circle", "rectangle", "triangle"]
    before, after = coco.state_dict(), trainer.model.state_dict()
    assert set(before) == set(after)
    for key, value in after.items():
        if ".cls_pred." in key:
            assert value.shape[0] == 3 and before[key].shape[0] == 80, key
        else:
            assert torch.equal(value.cpu(), before[key]), key
    result = trainer.fit()
    assert load(result.best).num_classes == 3


def _write_bad_dataset(root: Path, coco128: Path) -> Path:
    """Four real images and one corrupt one; labels with an unparsable line, a bad class and a box outside."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    sources = sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:4]
    for src in sources:
        os.symlink(src, root / "images" / src.name)
        label = coco128 / "labels" / "train2017" / f"{src.stem}.txt"
        lines = [f"{int(ln.split()[0]) % 2} {' '.join(ln.split()[1:])}" for ln in label.read_text().splitlines()]
        (root / "labels" / f"{src.stem}.txt").write_text("\n".join(lines) + "\n")
    stems = [s.stem for s in sources]
    with open(root / "labels" / f"{stems[0]}.txt", "a") as f:
        f.write("0 0.5 zero.5 0.2 0.2\n")  # unparsable
    with open(root / "labels" / f"{stems[1]}.txt", "a") as f:
        f.write("7 0.5 0.5 0.2 0.2\n")  # class id out of range (2 classes)
    with open(root / "labels" / f"{stems[2]}.txt", "a") as f:
        f.write("1 0.95 0.5 0.3 0.2\n")  # reaches out of the right edge
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (root / "labels" / "broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = {"path": ".", "train": "images", "val": "images", "names": ["even", "odd"]}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_bad_data_trains_and_reports_each_fault_once(coco128, tmp_path, capsys, caplog):
    data = _write_bad_dataset(tmp_path / "bad", coco128)
    with caplog.at_level(logging.WARNING, logger="yolonas"):
        result = train(small_config(data, tmp_path, batch=2, **{"run.plots": False}))
    assert result.best.is_file() and result.epochs == 1
    text = "\n".join(r.getMessage() for r in caplog.records) + capsys.readouterr().out
    faults = ((UNPARSABLE, ".txt:"), (BAD_CLASS, ".txt:"), (OUTSIDE, ".txt:"), (CORRUPT_IMAGE, "broken.jpg"))
    for fault, where in faults:
        assert text.count(fault) == 1, (fault, text)
        line = next(ln for ln in text.splitlines() if fault in ln)
        assert line.lstrip().startswith("1 x") and where in line, line


def test_validate_writes_coco_results_with_the_data_sets_own_ids(coco128, tmp_path):
    dataset = CocoDataset(coco128 / "annotations" / "instances_train2017.json", coco128 / "images" / "train2017")
    model = build(yolo_nas_tiny(), class_names=dataset.class_names,
                  preprocessing=Preprocessing(image_size=(128, 128))).eval()
    preds = tmp_path / "preds.json"
    metrics = validate(model, dataset, batch_size=16, save_predictions=preds)
    rows = json.loads(preds.read_text())
    assert rows and metrics.num_detections == len(rows) and metrics.num_images == 128
    ids = {int(i) for i in dataset.image_ids}
    files = dict(zip(dataset.image_ids.tolist(), dataset.files))
    assert {r["category_id"] for r in rows} <= set(dataset.category_ids)  # COCO's ids (1..90 with gaps)
    assert max(r["category_id"] for r in rows) > 80  # so not class index + 1
    assert all(r["image_id"] in ids and r["file_name"] == files[r["image_id"]] and len(r["bbox"]) == 4 for r in rows)
