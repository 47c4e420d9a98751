"""The trainer: data, model, loss, optimizer + EMA, AMP, DDP, validation and exact resume. Its checkpoints are
written by train.checkpoint, its record (results.csv, TensorBoard, the per-epoch lines) by train.runlog."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DistributedSampler

from yolonas.arch.model import YoloNAS, build
from yolonas.arch.spec import ArchSpec
from yolonas.data.loader import TrainDataset, make_loader
from yolonas.data.splits import open_splits
from yolonas.data.tiles import TiledDataset
from yolonas.errors import CheckpointError, InputError, Terminated
from yolonas.eval.coco import STAT_NAMES
from yolonas.eval.validate import validate
from yolonas.infer.tiling import TileConfig
from yolonas.train.build import (
    build_model,
    build_transforms,
    channels_last,
    freeze_unused,
    seed_everything,
    training_preprocessing,
)
from yolonas.train.checkpoint import (
    CheckpointWriter,
    ResumeState,
    read_resumed,
    resume_path,
    resumed_config,
    set_rng_state,
)
from yolonas.train.config import TrainConfig, load_recipe
from yolonas.train.distill import KD_KEYS, Distiller
from yolonas.train.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup,
    device_for_rank,
    dist_info_from_env,
    init_distributed,
    wrap_model,
)
from yolonas.train.ema import ModelEMA, unwrap
from yolonas.train.loss import PPYoloELoss, anchors_in_boxes
from yolonas.train.optim import FlatGrads, build_optimizer, build_scheduler
from yolonas.train.progress import EpochProgress
from yolonas.train.runlog import CSV_COLUMNS, LOSS_KEYS, METRIC_KEYS, RunLog, stopped_lines
from yolonas.train.signals import sigterm_raises
from yolonas.weights import load_state_strict

CPU_RECIPE = "cpu_s320"  # the recipe the CPU estimate suggests when it would train at a smaller size
ESTIMATE_AFTER_STEPS = 3  # the CPU time estimate is taken over these steps, after the first

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where a run left its files and what it reached."""

    run_dir: Path | None  # None on DDP ranks other than 0, which write nothing
    best: Path | None  # None when no best.pt exists (never validated; DDP ranks other than 0)
    last: Path | None
    epochs: int  # epochs completed
    best_epoch: int  # 1-based epoch of best.pt (0: never validated)
    best_fitness: float  # the run.best_metric of best.pt
    metrics: dict = field(default_factory=dict)  # the last validation's metrics


class Trainer:
    """One training run. `Trainer(cfg)` sets everything up (data, model, optimizer, resume); `fit()` trains.

    `on_epoch_end(trainer, epoch)` is called after each epoch's checkpoint (epoch is 1-based); raising in it stops
    the run like an interruption would, which is how the resume test kills a run.
    """

    def __init__(self, cfg: TrainConfig, on_epoch_end: Callable[[Trainer, int], None] | None = None,
                 model: YoloNAS | None = None):
        self.on_epoch_end = on_epoch_end
        self.dist: DistInfo = dist_info_from_env()
        self.resume_path = resume_path(cfg)
        ckpt = read_resumed(self.resume_path) if self.resume_path is not None else None
        self.cfg = resumed_config(cfg, ckpt) if ckpt is not None else cfg
        if self.cfg.run.best_metric not in STAT_NAMES:  # checked now, not after the first epoch has trained
            raise InputError(f"run.best_metric {self.cfg.run.best_metric!r} is not one of {', '.join(STAT_NAMES)}")
        self.device = device_for_rank(self.cfg.run.device, self.dist)
        init_distributed(self.device)
        seed_everything(self.cfg.run.seed, self.cfg.run.deterministic)
        self._open_data()
        self._build_model(model, ckpt)
        self._build_loss()
        self._build_loader()
        self._build_optimizer()
        self._restore(ckpt)
        self._open_run()

    @property
    def step(self) -> int:
        """Optimizer steps taken, over the whole run (resumed ones included)."""
        return self.state.step

    # -------------------------------------------------------------------------------------------- set-up steps

    def _open_data(self) -> None:
        """The training and validation data sets: one object when both splits name the same images."""
        data = self.cfg.data
        if not data.path:
            raise InputError("no training data given: set data.path (--data) to a data.yaml, COCO JSON or folder")
        # DDP ranks other than 0 open quietly: rank 0 already reports the label check.
        splits = open_splits(data.path, (data.train_split, data.val_split), data.images, data.cache,
                             quiet=not self.dist.is_main)
        self.train_data, self.val_data = splits[data.train_split], splits[data.val_split]
        self.tiles = TileConfig(data.tile, data.tile_overlap) if data.tile else None
        if data.tile:
            self.train_data = TiledDataset(self.train_data, data.tile, data.tile_overlap, data.tile_empty,
                                           seed=self.cfg.run.seed)

    def _build_model(self, model: YoloNAS | None, ckpt: dict | None) -> None:
        """The network on its device and in its memory layout; its EMA copy; `net`, what the loop calls (DDP)."""
        cfg = self.cfg
        self.model = self._network(model, ckpt)
        self.model.preprocessing = training_preprocessing(cfg.data.image_size)
        freeze_unused(self.model)
        self.model.to(self.device)
        self.memory_format = torch.contiguous_format
        if cfg.run.channels_last:
            self.memory_format = channels_last(self.model, self.device)
        self.ema = ModelEMA(self.model, cfg.ema.decay, cfg.ema.threshold) if cfg.ema.enabled else None
        self.net = wrap_model(self.model, self.dist, self.device, cfg.run.sync_bn)

    def _network(self, model: YoloNAS | None, ckpt: dict | None) -> YoloNAS:
        """The model given (e.g. QAT's fake-quant one; cfg.model is not used), the resumed run's, or cfg.model's;
        when resuming, with the saved weights."""
        class_names = list(self.train_data.class_names)
        if model is not None:
            if list(model.class_names) != class_names:
                raise InputError(f"the model's classes {list(model.class_names)} are not {self.cfg.data.path}'s "
                                 f"{class_names}")
            model = model.train()
        elif ckpt is not None:
            model = build(ArchSpec.from_dict(ckpt["spec"]), class_names=ckpt["class_names"])
            if list(ckpt["class_names"]) != class_names:
                raise CheckpointError(f"{self.resume_path}: trained on other classes than {self.cfg.data.path}")
        else:
            return build_model(self.cfg.model, class_names, self.log)
        if ckpt is not None:
            load_state_strict(model, ckpt["state_dict"], str(self.resume_path))
        return model

    def _build_loss(self) -> None:
        """The detection loss, the distiller when a teacher is set, and the loss columns they log."""
        cfg, class_names = self.cfg, list(self.train_data.class_names)
        self.criterion = PPYoloELoss(
            num_classes=len(class_names), reg_max=self.model.spec.head.reg_max, use_varifocal=cfg.loss.use_varifocal,
            iou_weight=cfg.loss.iou_weight, cls_weight=cfg.loss.cls_weight, dfl_weight=cfg.loss.dfl_weight,
            atss_warmup_epochs=cfg.loss.atss_warmup_epochs)
        # After the EMA copy, so the EMA model carries none of the distiller's neck hooks.
        self.distiller = (Distiller(cfg.distill, self.model, class_names, self.device, self.memory_format)
                          if cfg.distill.teacher else None)
        kd_keys = KD_KEYS if self.distiller else ()
        self.loss_keys = LOSS_KEYS + kd_keys
        self.csv_columns = CSV_COLUMNS[:6] + kd_keys + CSV_COLUMNS[6:]

    def _build_loader(self) -> None:
        """The training transforms and loader. Its sampler, also for one process, permutes by (seed, epoch) only,
        so a resumed run sees the same batches as an uninterrupted one."""
        data, seed, world = self.cfg.data, self.cfg.run.seed, self.dist.world_size
        self.transforms = build_transforms(self.cfg.augmentation, self.train_data, data.image_size, data.ignore_crowd,
                                           processes=world)
        self.train_set = TrainDataset(self.train_data, self.transforms, seed=seed, keep_crowd=data.ignore_crowd)
        sampler = DistributedSampler(self.train_set, num_replicas=world, rank=self.dist.rank, shuffle=True, seed=seed)
        per_rank = math.ceil(len(self.train_set) / world)
        self.loader = make_loader(self.train_set, batch_size=data.batch_size, shuffle=False, workers=data.workers,
                                  seed=seed, sampler=sampler, drop_last=per_rank > data.batch_size,
                                  pin_memory=self.device.type == "cuda")

    def _build_optimizer(self) -> None:
        """The optimizer over flat gradients, its learning-rate schedule, AMP and the fp16 gradient scaler."""
        cfg = self.cfg
        self.optimizer = build_optimizer(self.model, cfg.optimizer)
        if self.distiller is not None and len(self.distiller.loss.align):
            # The align convs learn with the student (same lr schedule) but are saved only in last.pt, for resume.
            self.optimizer.add_param_group({"params": list(self.distiller.loss.parameters()),
                                            "weight_decay": cfg.optimizer.weight_decay, "name": "distill_align"})
        self.grads = FlatGrads([p for group in self.optimizer.param_groups for p in group["params"]])
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, cfg.optimizer.lr, len(self.loader))
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.skipped_steps = torch.zeros((), device=self.device)  # counted on the device, read after the run

    def _amp_dtype(self) -> torch.dtype | None:
        if not self.cfg.run.amp:
            return None
        if self.device.type == "cpu":
            if self.cfg.run.amp_dtype != "bf16":
                return None
            if not torch.cpu._is_avx512_bf16_supported():
                logger.warning("bf16 asked for, but this CPU has no native bf16 (AVX512-BF16 or AMX), where it runs "
                               "slower than fp32: training in fp32")
                return None
            return torch.bfloat16
        if self.device.type != "cuda":
            return None
        if self.cfg.run.amp_dtype == "bf16" or (self.cfg.run.amp_dtype == "auto" and torch.cuda.is_bf16_supported()):
            return torch.bfloat16
        return torch.float16

    def _restore(self, ckpt: dict | None) -> None:
        """Where the run stands: at the start, or where last.pt left it (its weights came with the model)."""
        self.state = ResumeState() if ckpt is None else ResumeState.from_checkpoint(ckpt)
        self.start_epoch = self.state.epoch
        self.metrics: dict = {}
        if ckpt is None:
            return
        if self.distiller is not None and ckpt.get("distill_state_dict"):
            self.distiller.loss.load_state_dict(ckpt["distill_state_dict"])
        if self.ema is not None and ckpt.get("ema_state_dict") is not None:
            self.ema.load_state_dict(ckpt["ema_state_dict"], int(ckpt.get("ema_updates", 0)))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])

    def _open_run(self) -> None:
        """The run folder and its record (rank 0 only; TensorBoard when installed), the checkpoint writer, and the
        lines that describe the run."""
        self.run_log = self.checkpoints = None
        self.run_dir = self.weights_dir = None
        if not self.dist.is_main:
            return
        self.run_log = RunLog.open(self.cfg, self.resume_path, self.start_epoch, self.csv_columns, self.loss_keys,
                                   self.log)
        self.run_dir = self.run_log.run_dir
        self.weights_dir = self.run_dir / "weights"
        self.checkpoints = CheckpointWriter(self.weights_dir, self.cfg, self.model, self.ema, self.optimizer,
                                            self.scheduler, self.scaler, self.distiller, self.state)
        self._describe()

    def _describe(self) -> None:
        """The lines that open a run: its data, model, schedule, device, distillation and resume, and its folder."""
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        amp = {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.amp_dtype]
        ema = f"{cfg.ema.decay:g}" if self.ema else "off"
        val = "the training images" if self.val_data is self.train_data else f"{len(self.val_data)} images"
        self.log(f"train: {len(self.train_data)} images, {self.train_data.num_classes} classes; val: {val}")
        self.log(f"model: {self.model.spec.name} ({n_params / 1e6:.2f} M parameters) at {cfg.data.image_size}px; "
                 f"{cfg.optimizer.name} lr {cfg.optimizer.lr:g}, {cfg.schedule.epochs} epochs of {len(self.loader)} "
                 f"steps, batch {cfg.data.batch_size} x {self.dist.world_size} process(es); device {self.device}, "
                 f"AMP {amp}; EMA {ema}")
        if self.distiller is not None:
            d, t = cfg.distill, self.distiller.teacher
            self.log(f"distilling from {d.teacher} ({t.spec.name}, {sum(p.numel() for p in t.parameters()) / 1e6:.2f}"
                     f" M parameters): cls {d.cls_weight:g} (T {d.cls_temperature:g}), box {d.box_weight:g} "
                     f"(T {d.box_temperature:g}), feat {d.feat_weight:g}; weight decays to {d.final_weight_ratio:g}")
        if self.resume_path is not None:
            done = self.start_epoch >= cfg.schedule.epochs
            self.log(f"{self.resume_path} already finished its {cfg.schedule.epochs} epochs: nothing to resume" if done
                     else f"resuming {self.resume_path} after epoch {self.start_epoch}")
        self.log(f"results: {self.run_dir}")

    def log(self, message: str) -> None:
        """A progress message (rank 0, when run.verbose), logged at INFO."""
        if self.dist.is_main and self.cfg.run.verbose:
            logger.info(message)

    # -------------------------------------------------------------------------------------------- the loop

    def fit(self) -> TrainResult:
        """Train from `start_epoch` to `schedule.epochs`, validating and checkpointing; return where it all went.

        Ctrl-C, and SIGTERM (raised as `Terminated`), stop the run after saying which weights exist and how to
        resume; the exception goes on to the caller."""
        cfg = self.cfg
        if self.state.rng is not None:  # resumed: continue the random streams where last.pt left them
            set_rng_state(self.state.rng)
        with sigterm_raises():
            for epoch in range(self.start_epoch, cfg.schedule.epochs):
                try:
                    self.run_epoch(epoch)
                except KeyboardInterrupt as stop:
                    self._interrupted(epoch, "SIGTERM" if isinstance(stop, Terminated) else "Ctrl-C")
                    raise
        if self.run_log is not None:
            self.run_log.close()
        if self.skipped_steps.item() and self.dist.is_main:
            logger.warning(f"{int(self.skipped_steps.item())} optimizer steps skipped for non-finite gradients")
        written = self.checkpoints.existing() if self.checkpoints is not None else {}
        return TrainResult(self.run_dir, written.get("best"), written.get("last"), cfg.schedule.epochs,
                           self.state.best_epoch, self.state.best_fitness, self.metrics)

    def run_epoch(self, epoch: int) -> None:
        """Train one epoch, validate when due, log and checkpoint it."""
        t0, lr = time.time(), self.optimizer.param_groups[0]["lr"]
        losses = self.train_epoch(epoch)
        last_epoch = epoch + 1 == self.cfg.schedule.epochs
        every = self.cfg.run.val_every
        metrics = {}
        if self.dist.is_main and (last_epoch or (every > 0 and (epoch + 1) % every == 0)):
            metrics = self.validate(plots=last_epoch and self.cfg.run.plots)
        self.end_epoch(epoch, lr, losses, metrics, time.time() - t0)
        if self.on_epoch_end is not None:
            self.on_epoch_end(self, epoch + 1)

    def _interrupted(self, epoch: int, reason: str) -> None:
        """Say where a stopped run stands: the weights that exist, one line each, and the command that resumes it."""
        if not self.dist.is_main:
            return
        c = self.checkpoints
        for line in stopped_lines(reason, epoch + 1, self.cfg.schedule.epochs, c.existing(), self.run_dir,
                                  last_epoch=c.last_epoch, best_epoch=c.best_epoch, best_fitness=c.best_fitness,
                                  metric=self.cfg.run.best_metric, val_every=self.cfg.run.val_every):
            logger.warning(line)

    def set_epoch(self, epoch: int) -> None:
        """Everything epoch-dependent in the data: the sampler's permutation, per-item RNG, mosaic closing."""
        # The loader's EpochSampler sends (index, epoch, mosaic) to the workers, persistent ones included.
        self.loader.sampler.set_epoch(epoch)
        close = self.cfg.schedule.close_mosaic_epochs
        if close > 0 and epoch >= self.cfg.schedule.epochs - close:
            if epoch == self.cfg.schedule.epochs - close:
                self.log(f"mosaic and mixup off for the last {close} epochs")
            self.loader.sampler.close_mosaic()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data; the epoch's mean losses (over all ranks)."""
        self.set_epoch(epoch)
        self.net.train()
        sums = torch.zeros(len(self.loss_keys), device=self.device)
        steps = 0
        started = None
        with self._progress(epoch) as advance:
            for batch in self.loader:
                part = self.train_step(batch, epoch)
                sums += part
                steps += 1
                advance(part)
                if steps == 1:
                    started = time.perf_counter()  # after the first step: loader start-up is not per step
                elif steps == ESTIMATE_AFTER_STEPS + 1 and epoch == self.start_epoch:
                    self._estimate((time.perf_counter() - started) / ESTIMATE_AFTER_STEPS, epoch)
        mean = all_reduce_mean(sums / max(steps, 1))
        return dict(zip(self.loss_keys, mean.tolist()))

    def _estimate(self, step_s: float, epoch: int) -> None:
        """On the CPU, where a run can take hours, say early how long an epoch and the run will take."""
        if self.device.type != "cpu":
            return
        epoch_s = step_s * len(self.loader)
        left = self.cfg.schedule.epochs - epoch
        faster = ["a GPU", "a smaller --imgsz"]
        if self.cfg.data.image_size > load_recipe(CPU_RECIPE).data.image_size:  # else it would not be faster
            faster.append(f"the {CPU_RECIPE} recipe")
        self.log(f"estimate: about {epoch_s:.0f} s per epoch on this CPU, {epoch_s * left / 60:.0f} min for the "
                 f"{left} epoch(s) to go (plus validation); {', '.join(faster[:-1])} or {faster[-1]} is faster")

    def train_step(self, batch: dict, epoch: int) -> torch.Tensor:
        """One optimizer step on a loader batch (its uint8 images and padded ground truth, see data.loader.collate);
        the detached losses in `self.loss_keys` order, left on the device: nothing here waits for it."""
        images = batch["images"].to(self.device, non_blocking=True).float().div_(255)
        images = images.contiguous(memory_format=self.memory_format)
        gt_labels, gt_boxes, gt_mask = (t.to(self.device, non_blocking=True) for t in batch["gt"])
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype) if amp else contextlib.nullcontext():
            out = self.net(images)
            # The teacher sees the very tensor the student sees: the same augmentation, the same AMP.
            teacher_out = self.distiller.teacher_out(images) if self.distiller is not None else None
        ignored = None
        if batch["ignore_boxes"][1].numpy().any():  # the loader's host tensor: read on the host, no device involved
            boxes, mask = (t.to(self.device, non_blocking=True) for t in batch["ignore_boxes"])
            ignored = anchors_in_boxes(out.anchor_points.float(), boxes, mask)
        loss, parts = self.criterion.from_padded(out, gt_labels, gt_boxes, gt_mask, epoch, ignored)
        if self.distiller is not None:
            total = max(1, self.cfg.schedule.epochs * len(self.loader))
            kd, kd_parts = self.distiller(out, teacher_out, self.state.step / total)
            loss = loss + kd
            parts = {**parts, **kd_parts, "loss": loss.detach()}
        self.scaler.scale(loss).backward()
        if self.distiller is not None and self.dist.world_size > 1 and len(self.distiller.loss.align):
            # The align convs live outside DDP, so their gradients are averaged over the ranks here.
            for p in self.distiller.loss.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)
        self.optimizer_step()
        self.grads.zero_()
        self.scheduler.step()
        self.state.step += 1
        if self.ema is not None:
            self.ema.update(self.model)
        return torch.stack([parts[k] for k in self.loss_keys])

    def optimizer_step(self) -> None:
        """Clip the gradient norm and step, skipping the step when the gradients are not finite, without waiting
        for the device: a fused optimizer takes the clip factor and the skip flag as tensors."""
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        max_norm = self.cfg.optimizer.clip_grad_norm or math.inf
        if self.scaler.is_enabled():  # fp16: the scaler unscales, finds non-finite gradients and skips itself
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        # Gradients are all-reduced by now, so every rank takes the same decision here.
        norm = self.grads.norm()
        found_inf = (~torch.isfinite(norm)).float()
        self.skipped_steps += found_inf
        if self.optimizer.defaults.get("fused"):
            # The fused kernels divide the gradients by grad_scale: clip_grad_norm_'s factor, folded in.
            self.optimizer.grad_scale = ((norm + 1e-6) / max_norm).clamp(min=1.0)
            self.optimizer.found_inf = found_inf
            self.optimizer.step()
            del self.optimizer.grad_scale, self.optimizer.found_inf
        else:
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
            if torch.isfinite(norm):  # a device synchronisation, on optimizers without a fused kernel only
                self.optimizer.step()

    def _progress(self, epoch: int) -> EpochProgress:
        """A context giving `advance(losses)`: a rich progress bar with live losses on rank 0 when verbose."""
        return EpochProgress(f"epoch {epoch + 1}/{self.cfg.schedule.epochs}", len(self.loader),
                             enabled=self.dist.is_main and self.cfg.run.verbose, keys=self.loss_keys)

    @property
    def eval_model(self) -> YoloNAS:
        """The model that validation and best.pt use: the EMA when enabled."""
        return self.ema.module if self.ema is not None else unwrap(self.net)

    def validate(self, plots: bool = False) -> dict[str, float]:
        """COCO metrics of the EMA model on the validation data, through the same Predictor as predict."""
        metrics = validate(self.eval_model, self.val_data, batch_size=self.cfg.data.val_batch_size,
                           device=self.device, plots_dir=self.run_dir if plots else None, tiles=self.tiles)
        return metrics.to_dict()

    def end_epoch(self, epoch: int, lr: float, losses: dict[str, float], metrics: dict, seconds: float) -> None:
        """Record, pick best, write checkpoints (rank 0), keep ranks together; `lr` is the epoch's first."""
        self.state.epoch = epoch + 1
        if self.dist.is_main:
            self.run_log.record({"epoch": epoch + 1, "lr": lr, **losses, **{k: metrics.get(k, "") for k in METRIC_KEYS},
                                 "time": round(seconds, 2)})
            best = self._keep_best(metrics)
            self.checkpoints.save(self.state, self.metrics, best)
            self.run_log.report(epoch + 1, losses, metrics, lr, seconds)
        barrier(self.dist)

    def _keep_best(self, metrics: dict) -> bool:
        """Whether this epoch's metrics (none when it did not validate) beat the best so far; notes them if so."""
        if not metrics:
            return False
        self.metrics = metrics
        fitness = float(metrics[self.cfg.run.best_metric])
        if fitness <= self.state.best_fitness:
            return False
        self.state.best_fitness, self.state.best_epoch = fitness, self.state.epoch
        return True


def train(cfg: TrainConfig, on_epoch_end: Callable[[Trainer, int], None] | None = None,
          model: YoloNAS | None = None) -> TrainResult:
    """Train as `cfg` says (also under torchrun: each process calls this); see `Trainer`. `model`, when given,
    is trained instead of the one `cfg.model` names."""
    trainer = Trainer(cfg, on_epoch_end, model)
    try:
        return trainer.fit()
    finally:
        cleanup(trainer.dist)
