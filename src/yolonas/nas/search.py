"""Multi-objective search (accuracy estimate up, predicted latency down) with Optuna's NSGA-II, resumable from
a SQLite study in the run folder; then the Pareto front measured end to end, optionally trained briefly, and
written as a Markdown table, a plot and one spec YAML per member (nas.report)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch

from yolonas.arch.spec import ArchSpec, yolo_nas_s
from yolonas.errors import InputError
from yolonas.nas.latency import LatencyModel, LatencyTable, prediction_errors
from yolonas.nas.pareto import pareto_front
from yolonas.nas.proxies import PROXIES, meco, size_proxies
from yolonas.nas.report import write_report
from yolonas.nas.result import SearchResult
from yolonas.nas.space import SearchSpace, calibration_specs, sample, seeds, spec_hash
from yolonas.preprocess import Preprocessing

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SearchConfig:
    """Everything a search run needs; `yolonas search` fills it from its flags."""

    data: str
    out: Path
    backend: str = "onnxruntime"
    device: str = "cpu"
    precision: str = "fp32"  # fp16: torch on cuda; int8: ONNX backends, the model `yolonas quantize` makes
    imgsz: tuple[int, ...] = (320,)
    trials: int = 40  # in total: a resumed study runs only the missing ones
    latency_cap: float | None = None  # ms, on the predicted latency
    # or a fraction of `reference`'s predicted latency at the largest searched size: machines drift, ratios less
    latency_cap_ratio: float | None = None
    reference: ArchSpec | None = None  # what the ratio refers to (default: yolo_nas_s)
    threads: int = 2
    proxy: str = "meco"
    proxy_imgsz: int = 192  # MeCo's input size (at most imgsz): the score only needs a few feature maps
    population: int = 16
    seed: int = 0
    train_top: int = 0  # front members to train briefly (0: none)
    train_epochs: int = 3
    train_imgsz: int = 160
    train_images: int = 64  # first N training and N validation images for the brief training (data.yaml only)
    latency_table: Path | None = None  # default: runs/search/latency_table.json, shared by every search
    measure_front: int = 12  # front members re-measured end to end (0: none)
    calibrate: bool = True  # fit whole ≈ a * sum of parts + b on a few networks measured whole, before searching
    runs: int = 15  # timed calls per latency measurement
    space: SearchSpace = field(default_factory=SearchSpace)
    progress: bool = True


def _check(cfg: SearchConfig) -> None:
    if cfg.trials < 1:
        raise InputError(f"--trials must be at least 1, got {cfg.trials}")
    if cfg.latency_cap is not None and cfg.latency_cap <= 0:
        raise InputError(f"--latency-cap must be a positive number of ms, got {cfg.latency_cap}")
    if cfg.latency_cap_ratio is not None and (cfg.latency_cap_ratio <= 0 or cfg.latency_cap is not None):
        raise InputError(f"--latency-cap-ratio {cfg.latency_cap_ratio}: give a positive fraction, and not together "
                         "with --latency-cap")
    if cfg.proxy not in PROXIES:
        raise InputError(f"unknown accuracy proxy {cfg.proxy!r}: expected one of {', '.join(PROXIES)}")
    for s in cfg.imgsz:
        if s % 32 or s < 32:
            raise InputError(f"--imgsz {s}: must be a positive multiple of 32 (e.g. 320)")
    if cfg.train_top < 0 or (cfg.train_top and cfg.train_epochs < 1):
        raise InputError("--train-top must be >= 0 and --train-epochs >= 1")
    if cfg.train_top and (cfg.train_imgsz % 32 or cfg.train_imgsz < 32 or cfg.train_images < 1):
        raise InputError(f"--train-imgsz {cfg.train_imgsz} must be a positive multiple of 32 and --train-images "
                         f"{cfg.train_images} at least 1")
    if cfg.population < 2:
        raise InputError(f"population must be at least 2, got {cfg.population}")


def _proxy_images(dataset, size: int, n: int = 2) -> torch.Tensor:
    """The first `n` training images letterboxed to `size`: MeCo's one forward pass sees real data."""
    from yolonas.data.images import read_image  # noqa: PLC0415
    from yolonas.infer.letterbox import letterbox_batch  # noqa: PLC0415

    images = [read_image(dataset.root / f) for f in dataset.files[:n]]
    if not images:
        raise InputError("the training split has no images to score candidates on")
    return letterbox_batch(images, Preprocessing((size, size)))[0]


@dataclass
class _Run:
    """What the steps of one search run share: its config, the space searched, the run folder, the training
    split's class names, the images MeCo scores on, and the latency model (with its table)."""

    cfg: SearchConfig
    space: SearchSpace
    out: Path
    names: list[str]
    images: torch.Tensor
    lat: LatencyModel

    @property
    def num_classes(self) -> int:
        return len(self.names)


def search(cfg: SearchConfig) -> SearchResult:
    """Run (or resume) the search that `cfg` describes; returns the result also written as search.json."""
    _check(cfg)
    run = _open_run(cfg)
    study = _open_study(run)
    calibration = _study_calibration(study, run.space)
    cap = _latency_cap(run, calibration)
    todo = max(0, cfg.trials - sum(t.state.is_finished() for t in study.trials))
    objective = Objective(run.space, run.lat, run.images, run.num_classes, cfg.proxy, calibration, cap)
    _, search_s = _timed(_optimize, study, objective, todo, cfg.progress, cap)

    trials = _completed(study)
    front = _front(trials, cap)
    specs = [ArchSpec.from_dict(t.user_attrs["spec"]) for t in front]
    rows = [_row(t, i) for i, t in enumerate(front)]
    result = _summary(run, calibration, cap, trials, todo, search_s)
    if not rows and trials and cap is not None:
        result.note = _no_front_note(trials, cap)
    if cfg.measure_front and rows:
        result.latency_check, result.measure_s = _timed(
            _measure_front, rows[: cfg.measure_front], specs, run.lat, run.num_classes)
    _write_specs(run, rows, specs)
    if cfg.train_top and rows:
        if cfg.proxy != "meco":  # so that the short training ranks the training-free proxy too
            _add_meco(rows, specs, run)
        result.short_training, result.train_s = _timed(_short_training, rows, run)
    result.front = rows
    write_report(run.out, result.to_dict(), _points(trials), cfg.proxy, cap)
    return result


def _timed(fn: Callable[..., T], *args) -> tuple[T, float]:
    """fn(*args) and the seconds it took."""
    t0 = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - t0


def _open_run(cfg: SearchConfig) -> _Run:
    """The run folder (with config.json), the training split, the proxy images and the latency model."""
    from yolonas.data import open_dataset  # noqa: PLC0415

    space = SearchSpace(**{**cfg.space.__dict__, "imgsz": tuple(cfg.imgsz)})
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(cfg.data, "train")
    images = _proxy_images(dataset, min(cfg.proxy_imgsz, *cfg.imgsz))
    table = LatencyTable(cfg.latency_table or out.parent / "latency_table.json")
    lat = LatencyModel(table, cfg.backend, cfg.threads, cfg.precision, device=cfg.device, runs=cfg.runs)
    (out / "config.json").write_text(json.dumps({**_plain_cfg(cfg), "target": lat.target}, indent=2) + "\n")
    return _Run(cfg, space, out, dataset.class_names, images, lat)


def _open_study(run: _Run):
    """The run folder's Optuna study, resumed when it exists; a new one is seeded and calibrated first."""
    import optuna  # noqa: PLC0415 - the search's own dependency

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=run.cfg.population, seed=run.cfg.seed)
    study = optuna.create_study(study_name="search", storage=f"sqlite:///{(run.out / 'study.db').resolve()}",
                                directions=["maximize", "minimize"], sampler=sampler, load_if_exists=True)
    if not study.trials:
        _start_study(study, run)
    return study


def _start_study(study, run: _Run) -> None:
    """A new study: the built-in specs that are points of the space go first; the latency calibration is stored."""
    seeded = sorted(seeds(run.space).items(), key=lambda kv: _order(kv[0]))[: max(1, run.cfg.trials // 2)]
    for name, params in seeded:
        study.enqueue_trial(params, user_attrs={"seed": name})
    study.set_user_attr("calibration", _calibrate(run.cfg, run.space, run.lat, run.num_classes))


def _completed(study) -> list:
    from optuna.trial import TrialState  # noqa: PLC0415

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _study_calibration(study, space: SearchSpace) -> dict:
    """Per input size, the (a, b) of the study's latency calibration.

    A resumed study keeps the calibration it started with, so that all its trials compare; one from before
    calibrations existed predicts by the raw sum."""
    return study.user_attrs.get("calibration") or {str(s): {"a": 1.0, "b": 0.0, "n": 0} for s in space.imgsz}


def _calibrated(calibration: dict, imgsz: int, parts_sum: float) -> float:
    """The whole network's predicted ms from the sum of its parts' ms."""
    cal = calibration[str(imgsz)]
    return cal["a"] * parts_sum + cal["b"]


def _reference(cfg: SearchConfig) -> ArchSpec:
    return cfg.reference or yolo_nas_s()


def _latency_cap(run: _Run, calibration: dict) -> float | None:
    """The cap in ms: given, or the ratio times the reference's predicted latency at the largest searched size."""
    cfg = run.cfg
    if cfg.latency_cap_ratio is None:
        return cfg.latency_cap
    reference, size = _reference(cfg), max(run.space.imgsz)
    ref_ms = _calibrated(calibration, size, run.lat.predict(reference, size, run.num_classes)["total"])
    cap = cfg.latency_cap_ratio * ref_ms
    log.info("search: latency cap x%g of %s (%.2f ms predicted at %d px) = %.2f ms", cfg.latency_cap_ratio,
             reference.name, ref_ms, size, cap)
    return cap


def _calibrate(cfg: SearchConfig, space: SearchSpace, lat: LatencyModel, num_classes: int) -> dict:
    """Per input size, the (a, b) that turn a sum of parts into a whole-network prediction (cached in the table)."""
    out = {}
    specs = calibration_specs(space, seed=cfg.seed)
    for size in space.imgsz:
        if not cfg.calibrate or len(specs) < 3:  # a space of one or two networks: nothing to fit
            out[str(size)] = {"a": 1.0, "b": 0.0, "n": 0}
            continue
        cal = lat.calibration(specs, size, num_classes)
        out[str(size)] = {"a": cal["a"], "b": cal["b"], "n": cal["n"]}
        log.info("search: latency at %d px calibrated on %d networks measured whole: whole = %.3f x sum of parts "
                 "%+.2f ms", size, cal["n"], cal["a"], cal["b"])
    return out


@dataclass
class Objective:
    """One trial: a spec sampled from the space, its accuracy estimates (cached per spec and input size) and its
    calibrated latency prediction, recorded on the trial; returns (estimate, ms) and marks trials over the cap."""

    space: SearchSpace
    lat: LatencyModel
    images: torch.Tensor  # what MeCo scores on
    num_classes: int
    proxy: str
    calibration: dict
    cap: float | None = None
    scores: dict[str, dict] = field(default_factory=dict)

    def __call__(self, trial) -> tuple[float, float]:
        spec, imgsz = sample(trial, self.space)
        scores = self.estimates(spec, imgsz)
        latency = self.lat.predict(spec, imgsz, self.num_classes)
        total = _calibrated(self.calibration, imgsz, latency["total"])
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("imgsz", imgsz)
        trial.set_user_attr("latency_ms", total)
        trial.set_user_attr("latency_sum_ms", latency["total"])
        if self.cap is not None:  # feasible when <= 0: NSGA-II ranks infeasible trials behind every feasible one
            trial.set_constraint("latency_cap", total - self.cap)
        trial.set_user_attr("latency_parts", {k: v for k, v in latency.items() if k != "total"})
        for k, v in scores.items():
            trial.set_user_attr(k, v)
        return scores[self.proxy], total

    def estimates(self, spec: ArchSpec, imgsz: int) -> dict[str, float]:
        """Params and GFLOPs, and MeCo when it is the proxy searched on."""
        key = f"{spec_hash(spec)}@{imgsz}"
        if key not in self.scores:
            scores = size_proxies(spec, imgsz, self.num_classes)
            if self.proxy == "meco":
                scores["meco"] = meco(spec, self.images, self.num_classes)
            self.scores[key] = scores
        return self.scores[key]


def _order(name: str) -> int:
    return ["yolo_nas_tiny", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l"].index(name) if name.startswith("yolo") else 9


def _plain_cfg(cfg: SearchConfig) -> dict:
    d = {k: v for k, v in cfg.__dict__.items() if k not in ("space", "reference")}
    d["reference"] = cfg.reference.to_dict() if cfg.reference is not None else None
    d["space"] = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.space.__dict__.items()}
    return json.loads(json.dumps(d, default=str))


def _optimize(study, objective, n: int, progress: bool, cap: float | None) -> None:
    """study.optimize with one progress line per trial (rich on a terminal, plain lines otherwise)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    if n == 0:
        return
    with Progress(TextColumn("search"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), disable=not progress, transient=False) as bar:
        task = bar.add_task("", total=n)

        def callback(study_, trial) -> None:
            lat = trial.user_attrs.get("latency_ms", math.nan)
            fits = "" if cap is None or lat <= cap else " (over the cap)"
            values = trial.values or [math.nan, math.nan]
            bar.update(task, advance=1, description=f"trial {trial.number}: score {values[0]:.4g}, "
                                                    f"{lat:.2f} ms{fits}; front {len(study_.best_trials)}")

        study.optimize(objective, n_trials=n, callbacks=[callback], gc_after_trial=True)


def _front(trials: list, cap: float | None) -> list:
    """Feasible Pareto-optimal trials (estimate up, latency down), one per architecture and size, fastest first.

    Computed here over the trials within this run's cap, not taken from study.best_trials (which filters by the
    constraints stored with each trial), so that the front stays right when a resumed run changes --latency-cap."""
    feasible = [t for t in trials if cap is None or t.user_attrs["latency_ms"] <= cap]
    front, seen = [], set()
    for t in pareto_front(feasible, key=lambda t: (t.values[1], t.values[0])):
        h = spec_hash(ArchSpec.from_dict(t.user_attrs["spec"])) + str(t.user_attrs["imgsz"])
        if h not in seen:
            seen.add(h)
            front.append(t)
    return front


def _no_front_note(trials: list, cap: float) -> str:
    fastest = min(t.user_attrs["latency_ms"] for t in trials)
    note = (f"no trial met --latency-cap {cap:g} ms (the fastest predicted {fastest:.2f} ms): raise the cap, or "
            "search a smaller space or input size")
    log.warning("search: %s", note)
    return note


def _summary(run: _Run, calibration: dict, cap: float | None, trials: list, todo: int,
             search_s: float) -> SearchResult:
    """The run's summary before the front: what was searched, on which target, under which cap, how fast."""
    cfg, table = run.cfg, run.lat.table
    return SearchResult(
        out=str(run.out), trials=len(trials), trials_this_run=todo, search_s=search_s, space_size=run.space.size(),
        target=run.lat.target, proxy=cfg.proxy, latency_cap_ms=cap, latency_cap_ratio=cfg.latency_cap_ratio,
        latency_reference=_reference(cfg).name if cfg.latency_cap_ratio else None, calibration=calibration,
        latency_table={"path": str(table.path), "entries": len(table.entries), "hits": table.hits,
                       "misses": table.misses},
        load_average=list(os.getloadavg()))


def _points(trials: list) -> list[dict]:
    """Every trial as a point of the plot: predicted latency, estimate, and the seed's name for seeded ones."""
    return [{"latency_ms": t.user_attrs["latency_ms"], "score": t.values[0], "seed": t.user_attrs.get("seed")}
            for t in trials]


def _row(t, rank: int) -> dict:
    u = t.user_attrs
    spec = ArchSpec.from_dict(u["spec"])
    bb, neck = spec.backbone, spec.neck
    return {
        "rank": rank, "trial": t.number, "name": spec.name, "seed": u.get("seed"), "imgsz": u["imgsz"],
        "latency_ms": u["latency_ms"], "latency_sum_ms": u.get("latency_sum_ms", u["latency_ms"]),
        "meco": u.get("meco"), "params": u["params"], "gflops": u["gflops"],
        "stem": bb.stem_channels,
        "stages": "; ".join(f"{s.out_channels}/{s.num_blocks}x{s.hidden_channels}"
                            + ("c" if s.concat_intermediates else "") for s in bb.stages),
        "neck": "; ".join(f"{s.out_channels}/{s.num_blocks}x{s.hidden_channels}"
                          for s in (neck.up1, neck.up2, neck.down1, neck.down2)),
        "head": list(spec.head.widths),
    }


def _measure_front(rows: list[dict], specs: list[ArchSpec], lat: LatencyModel, num_classes: int) -> dict:
    """Measure front members end to end (their parts afresh in the same turns too) against the table's prediction."""
    by_size: dict[int, list[tuple[dict, ArchSpec]]] = {}
    for row, spec in zip(rows, specs):
        by_size.setdefault(row["imgsz"], []).append((row, spec))
    for size, pairs in by_size.items():
        m = lat.measure([s for _, s in pairs], size, num_classes, with_parts=True)
        for (row, _), whole, parts in zip(pairs, m["whole"], m["parts_sum"]):
            row["measured_ms"], row["parts_now_ms"] = whole, parts
    measured = [r["measured_ms"] for r in rows]
    check = {"table": prediction_errors([r["latency_ms"] for r in rows], measured),
             "raw_sum": prediction_errors([r["latency_sum_ms"] for r in rows], measured),
             "same_turns": prediction_errors([r["parts_now_ms"] for r in rows], measured),
             "load_average": list(os.getloadavg())}
    a, b = check["table"]["correction"]["a"], check["table"]["correction"]["b"]
    for row in rows:
        row["corrected_ms"] = a * row["latency_ms"] + b
    return check


def _write_specs(run: _Run, rows: list[dict], specs: list[ArchSpec]) -> None:
    """One spec YAML per front member in specs/ (a resumed run's front replaces the earlier one's files)."""
    folder = run.out / "specs"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for row, spec in zip(rows, specs):
        path = folder / f"{row['rank']:02d}_{spec.name}.yaml"
        header = (f"# Searched for {run.lat.target} at {row['imgsz']} px: predicted {row['latency_ms']:.2f} ms, "
                  f"{run.cfg.proxy} {row[run.cfg.proxy]:.4g}.\n# Train it: yolonas train --data DATA --model "
                  f"{path.name} --imgsz {row['imgsz']}\n")
        path.write_text(header + spec.to_yaml())
        row["spec_file"] = str(path)


def _add_meco(rows: list[dict], specs: list[ArchSpec], run: _Run) -> None:
    """MeCo of each front member, for a search that ranked by another estimate."""
    for row, spec in zip(rows, specs):
        row["meco"] = meco(spec, run.images, run.num_classes)


def _short_training(rows: list[dict], run: _Run) -> dict:
    """Train `train_top` front members briefly on the user's data; Kendall tau of each proxy against the result."""
    cfg = run.cfg
    k = min(cfg.train_top, len(rows))
    # Spread over the front (fastest to most accurate), not only its top: the ranking needs a range.
    picks = sorted({round(i * (len(rows) - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else [len(rows) - 1]
    data = _subset_data(cfg.data, run.out / "train_data", cfg.train_images, run.names)
    trained = [_train_briefly(rows[i], data, run) for i in picks]
    return {"trained": [r["name"] for r in trained], "epochs": cfg.train_epochs, "imgsz": cfg.train_imgsz,
            "images": cfg.train_images, "data": str(data),
            "kendall_tau": kendall_taus(trained, "short_train_ap"),
            "kendall_tau_loss": kendall_taus(trained, "short_train_loss", lower_is_better=True)}


def _train_briefly(row: dict, data: str, run: _Run) -> dict:
    """Train one front member's spec file with the cpu_smoke recipe; its AP and mean training loss go on `row`."""
    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415

    cfg = run.cfg
    tcfg = apply_overrides(load_recipe("cpu_smoke"), {
        "data": str(data), "model": row["spec_file"], "epochs": cfg.train_epochs, "imgsz": cfg.train_imgsz,
        "project": str(run.out / "train"), "name": f"{row['rank']:02d}_{row['name']}", "exist_ok": True,
        "seed": cfg.seed, "val_every": 0, "run.plots": False, "run.verbose": False, "device": cfg.device,
        "workers": 0})
    result = train(tcfg)
    row["short_train_ap"] = float(result.metrics.get("AP", result.best_fitness))
    row["short_train_ap50"] = float(result.metrics.get("AP50", math.nan))
    row["short_train_loss"] = _mean_training_loss(result.run_dir / "results.csv")
    log.info("search: trained %s for %d epochs: AP %.4f, mean training loss %.3f", row["name"], cfg.train_epochs,
             row["short_train_ap"], row["short_train_loss"])
    return row


def _mean_training_loss(results_csv: Path) -> float:
    """The training loss averaged over a run's epochs (TSE, Ru et al. 2021): it ranks architectures early, while
    a few epochs still leave AP at about zero for all of them."""
    import csv  # noqa: PLC0415

    with open(results_csv) as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    return sum(losses) / len(losses)


def kendall_taus(rows: list[dict], signal: str, lower_is_better: bool = False) -> dict:
    """Kendall tau (and p) of each cheap estimate against `signal` over `rows`, oriented so that +1 means a larger
    estimate goes with a better signal for every pair; None below 3 members or when either side ties everywhere."""
    from scipy.stats import kendalltau  # noqa: PLC0415

    target = [-r[signal] if lower_is_better else r[signal] for r in rows]
    taus: dict[str, dict | None] = {}
    for proxy in ("meco", "params", "gflops", "latency_ms"):
        values = [r.get(proxy) for r in rows]
        if len(rows) < 3 or None in values or len(set(target)) < 2 or len(set(values)) < 2:
            taus[proxy] = None
            continue
        tau = kendalltau(values, target)
        taus[proxy] = {"tau": float(tau.statistic), "p": float(tau.pvalue)}
    return taus


def _subset_data(data: str, folder: Path, n: int, names: list[str]) -> str:
    """A data.yaml listing the first `n` train and val images (YOLO layouts); other data as given."""
    import yaml  # noqa: PLC0415

    from yolonas.data import data_yaml_of, open_dataset  # noqa: PLC0415

    if data_yaml_of(data) is None:
        return data
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        ds = open_dataset(data, split)
        (folder / f"{split}.txt").write_text("".join(f"{(ds.root / f).resolve()}\n" for f in ds.files[:n]))
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump({"path": str(folder.resolve()), "train": "train.txt", "val": "val.txt",
                                    "names": names}))
    return str(path)


