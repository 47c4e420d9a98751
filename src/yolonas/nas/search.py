"""Multi-objective search (accuracy estimate up, predicted latency down) with Optuna's NSGA-II, resumable from
a SQLite study in the run folder; then the Pareto front measured end to end, optionally trained briefly, and
written as a Markdown table, a plot and one spec YAML per member."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from yolonas.arch.model import Preprocessing
from yolonas.arch.spec import ArchSpec, yolo_nas_s
from yolonas.errors import InputError
from yolonas.nas.latency import LatencyModel, LatencyTable, prediction_errors
from yolonas.nas.proxies import PROXIES, meco, size_proxies
from yolonas.nas.space import SearchSpace, calibration_specs, sample, seeds, spec_hash


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
    from yolonas.data import read_image  # noqa: PLC0415
    from yolonas.infer.letterbox import letterbox_batch  # noqa: PLC0415

    images = [read_image(dataset.root / f) for f in dataset.files[:n]]
    if not images:
        raise InputError("the training split has no images to score candidates on")
    return letterbox_batch(images, Preprocessing((size, size)))[0]


def search(cfg: SearchConfig) -> dict:
    """Run (or resume) the search that `cfg` describes; returns the summary also written as search.json."""
    import optuna  # noqa: PLC0415 - the search's own dependency

    from yolonas.data import open_dataset  # noqa: PLC0415

    _check(cfg)
    space = SearchSpace(**{**cfg.space.__dict__, "imgsz": tuple(cfg.imgsz)})
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = open_dataset(cfg.data, "train")
    names = dataset.class_names
    proxy_size = min(cfg.proxy_imgsz, *cfg.imgsz)
    images = _proxy_images(dataset, proxy_size)
    table = LatencyTable(cfg.latency_table or out.parent / "latency_table.json")
    lat = LatencyModel(table, cfg.backend, cfg.threads, cfg.precision, device=cfg.device, runs=cfg.runs)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cap = cfg.latency_cap
    sampler = optuna.samplers.NSGAIISampler(population_size=cfg.population, seed=cfg.seed)
    study = optuna.create_study(study_name="search", storage=f"sqlite:///{(out / 'study.db').resolve()}",
                                directions=["maximize", "minimize"], sampler=sampler, load_if_exists=True)
    (out / "config.json").write_text(json.dumps({**_plain_cfg(cfg), "target": lat.target}, indent=2) + "\n")
    if not study.trials:  # a new study: the built-in specs that are points of the space go first
        seeded = sorted(seeds(space).items(), key=lambda kv: _order(kv[0]))[: max(1, cfg.trials // 2)]
        for name, params in seeded:
            study.enqueue_trial(params, user_attrs={"seed": name})
        study.set_user_attr("calibration", _calibrate(cfg, space, lat, len(names)))
    # A resumed study keeps the calibration it started with, so that all its trials compare; one from before
    # calibrations existed predicts by the raw sum.
    calibration = study.user_attrs.get("calibration") or {str(s): {"a": 1.0, "b": 0.0, "n": 0} for s in space.imgsz}
    reference = cfg.reference or yolo_nas_s()
    if cfg.latency_cap_ratio is not None:
        size = max(space.imgsz)
        cal = calibration[str(size)]
        ref_ms = cal["a"] * lat.predict(reference, size, len(names))["total"] + cal["b"]
        cap = cfg.latency_cap_ratio * ref_ms
        print(f"search: latency cap x{cfg.latency_cap_ratio:g} of {reference.name} ({ref_ms:.2f} ms predicted at "
              f"{size} px) = {cap:.2f} ms", file=sys.stderr)
    proxies: dict[str, dict] = {}

    def objective(trial) -> tuple[float, float]:
        spec, imgsz = sample(trial, space)
        key = f"{spec_hash(spec)}@{imgsz}"
        if key not in proxies:
            scores = size_proxies(spec, imgsz, len(names))
            if cfg.proxy == "meco":
                scores["meco"] = meco(spec, images, len(names))
            proxies[key] = scores
        scores = proxies[key]
        latency = lat.predict(spec, imgsz, len(names))
        cal = calibration[str(imgsz)]
        total = cal["a"] * latency["total"] + cal["b"]
        trial.set_user_attr("spec", spec.to_dict())
        trial.set_user_attr("imgsz", imgsz)
        trial.set_user_attr("latency_ms", total)
        trial.set_user_attr("latency_sum_ms", latency["total"])
        if cap is not None:  # feasible when <= 0: NSGA-II ranks infeasible trials behind every feasible one
            trial.set_constraint("latency_cap", total - cap)
        trial.set_user_attr("latency_parts", {k: v for k, v in latency.items() if k != "total"})
        for k, v in scores.items():
            trial.set_user_attr(k, v)
        return scores[cfg.proxy], total

    done = sum(t.state.is_finished() for t in study.trials)
    todo = max(0, cfg.trials - done)
    t0 = time.perf_counter()
    _optimize(study, objective, todo, cfg.progress, cap)
    search_s = time.perf_counter() - t0

    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = _front(study, trials, cap)
    result = {"out": str(out), "trials": len(trials), "trials_this_run": todo, "search_s": search_s,
              "space_size": space.size(), "target": lat.target, "proxy": cfg.proxy, "latency_cap_ms": cap,
              "latency_cap_ratio": cfg.latency_cap_ratio,
              "latency_reference": reference.name if cfg.latency_cap_ratio else None,
              "calibration": calibration,
              "latency_table": {"path": str(table.path), "entries": len(table.entries), "hits": table.hits,
                                "misses": table.misses},
              "load_average": list(_loadavg())}
    rows = [_row(t, i) for i, t in enumerate(front)]
    if not rows and trials and cap is not None:
        fastest = min(t.user_attrs["latency_ms"] for t in trials)
        result["note"] = (f"no trial met --latency-cap {cap:g} ms (the fastest predicted {fastest:.2f} ms): raise "
                          "the cap, or search a smaller space or input size")
        print(f"search: {result['note']}", file=sys.stderr)
    if cfg.measure_front and rows:
        t1 = time.perf_counter()
        specs = [ArchSpec.from_dict(t.user_attrs["spec"]) for t in front]
        result["latency_check"] = _measure_front(rows[: cfg.measure_front], specs, lat, len(names))
        result["measure_s"] = time.perf_counter() - t1
    (out / "specs").mkdir(exist_ok=True)
    for old in (out / "specs").glob("*.yaml"):  # a resumed run's front replaces the earlier one
        old.unlink()
    for row, t in zip(rows, front):
        spec = ArchSpec.from_dict(t.user_attrs["spec"])
        path = out / "specs" / f"{row['rank']:02d}_{spec.name}.yaml"
        header = (f"# Searched for {lat.target} at {row['imgsz']} px: predicted {row['latency_ms']:.2f} ms, "
                  f"{cfg.proxy} {row[cfg.proxy]:.4g}.\n# Train it: yolonas train --data DATA --model {path.name} "
                  f"--imgsz {row['imgsz']}\n")
        path.write_text(header + spec.to_yaml())
        row["spec_file"] = str(path)
    if cfg.train_top and rows:
        if cfg.proxy != "meco":  # so that the short training ranks the training-free proxy too
            for row, t in zip(rows, front):
                row["meco"] = meco(ArchSpec.from_dict(t.user_attrs["spec"]), images, len(names))
        t2 = time.perf_counter()
        result["short_training"] = _short_training(rows, cfg, out, names)
        result["train_s"] = time.perf_counter() - t2
    result["front"] = rows
    (out / "front.md").write_text(front_markdown(result, cfg.proxy))
    plot_front(trials, rows, out / "front.png", cfg.proxy, cap)
    (out / "search.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


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
        print(f"search: latency at {size} px calibrated on {cal['n']} networks measured whole: whole = "
              f"{cal['a']:.3f} x sum of parts {cal['b']:+.2f} ms", file=sys.stderr)
    return out


def _order(name: str) -> int:
    return ["yolo_nas_tiny", "yolo_nas_s", "yolo_nas_m", "yolo_nas_l"].index(name) if name.startswith("yolo") else 9


def _loadavg() -> tuple[float, float, float]:
    import os  # noqa: PLC0415

    return os.getloadavg()


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


def _front(study, trials: list, cap: float | None) -> list:
    """Feasible Pareto-optimal trials, one per architecture, fastest first."""
    feasible = [t for t in trials if cap is None or t.user_attrs["latency_ms"] <= cap]
    best = {t.number for t in study.best_trials}
    front, seen = [], set()
    # best_trials already ignores infeasible trials with a constraints_func; recomputing over the feasible set
    # keeps the front right when a resumed run changes --latency-cap.
    pool = [t for t in feasible if t.number in best] if cap is None else _pareto(feasible)
    for t in sorted(pool, key=lambda t: (t.values[1], -t.values[0])):
        h = spec_hash(ArchSpec.from_dict(t.user_attrs["spec"])) + str(t.user_attrs["imgsz"])
        if h not in seen:
            seen.add(h)
            front.append(t)
    return front


def _pareto(trials: list) -> list:
    return [t for t in trials if not any(
        o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and tuple(o.values) != tuple(t.values)
        for o in trials)]


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
        group = [r for r, _ in pairs]
        m = lat.measure([s for _, s in pairs], size, num_classes, with_parts=True)
        for row, whole, parts in zip(group, m["whole"], m["parts_sum"]):
            row["measured_ms"], row["parts_now_ms"] = whole, parts
    predicted = [r["latency_ms"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    check = {"table": prediction_errors(predicted, measured),
             "raw_sum": prediction_errors([r["latency_sum_ms"] for r in rows], measured),
             "same_turns": prediction_errors([r["parts_now_ms"] for r in rows], measured),
             "load_average": list(_loadavg())}
    a, b = check["table"]["correction"]["a"], check["table"]["correction"]["b"]
    for row in rows:
        row["corrected_ms"] = a * row["latency_ms"] + b
    return check


def _short_training(rows: list[dict], cfg: SearchConfig, out: Path, names: list[str]) -> dict:
    """Train `train_top` front members briefly on the user's data; Kendall tau of each proxy against the result."""
    from yolonas.train import apply_overrides, load_recipe, train  # noqa: PLC0415

    k = min(cfg.train_top, len(rows))
    # Spread over the front (fastest to most accurate), not only its top: the ranking needs a range.
    picks = sorted({round(i * (len(rows) - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else [len(rows) - 1]
    data = _subset_data(cfg.data, out / "train_data", cfg.train_images, names)
    trained = []
    for i in picks:
        row = rows[i]
        tcfg = apply_overrides(load_recipe("cpu_smoke"), {
            "data": str(data), "model": row["spec_file"], "epochs": cfg.train_epochs, "imgsz": cfg.train_imgsz,
            "project": str(out / "train"), "name": f"{row['rank']:02d}_{row['name']}", "exist_ok": True,
            "seed": cfg.seed, "val_every": 0, "run.plots": False, "run.verbose": False, "device": cfg.device,
            "workers": 0})
        result = train(tcfg)
        row["short_train_ap"] = float(result.metrics.get("AP", result.best_fitness))
        row["short_train_ap50"] = float(result.metrics.get("AP50", math.nan))
        row["short_train_loss"] = _mean_training_loss(result.run_dir / "results.csv")
        trained.append(row)
        print(f"search: trained {row['name']} for {cfg.train_epochs} epochs: AP {row['short_train_ap']:.4f}, "
              f"mean training loss {row['short_train_loss']:.3f}", file=sys.stderr)
    return {"trained": [r["name"] for r in trained], "epochs": cfg.train_epochs, "imgsz": cfg.train_imgsz,
            "images": cfg.train_images, "data": str(data),
            "kendall_tau": kendall_taus(trained, "short_train_ap"),
            "kendall_tau_loss": kendall_taus(trained, "short_train_loss", lower_is_better=True)}


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

    from yolonas.data import open_dataset  # noqa: PLC0415
    from yolonas.train.trainer import data_yaml_of  # noqa: PLC0415

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


def front_markdown(result: dict, proxy: str) -> str:
    """The Pareto front as a Markdown table, with the latency check and Kendall tau when present."""
    rows = result["front"]
    cals = result.get("calibration") or {}
    how = "; ".join(f"{size} px: whole = {c['a']:.3f} x sum {c['b']:+.2f} ms, fitted on {c['n']} networks measured "
                    "whole" for size, c in cals.items() if c.get("n"))
    lines = [f"# Search front ({result['trials']} trials, {result['target']})", "",
             f"Accuracy estimate: `{proxy}`; latency (ms): the sum of the parts' cached medians"
             + (f", calibrated ({how})" if how else "") + ". Stages: "
             "width/blocks x hidden (c = concatenated intermediates); neck: up1; up2; down1; down2.", ""]
    measured = any("measured_ms" in r for r in rows)
    trained = any("short_train_ap" in r for r in rows)
    head = ["#", "name", "imgsz", "predicted ms"] + (["measured ms", "corrected ms"] if measured else []) + [
        proxy, "params (M)", "GFLOPs"] + (["short-train AP", "short-train loss"] if trained else []) + [
        "stem", "stages", "neck", "head", "seed"]
    if result.get("note"):
        lines += [f"**{result['note']}**", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["rank"], r["name"], r["imgsz"], f"{r['latency_ms']:.2f}"]
        if measured:
            cells += [f"{r['measured_ms']:.2f}" if "measured_ms" in r else "",
                      f"{r['corrected_ms']:.2f}" if "corrected_ms" in r else ""]
        cells += [f"{r[proxy]:.4g}", f"{r['params']:.2f}", f"{r['gflops']:.2f}"]
        if trained:
            cells += [f"{r['short_train_ap']:.4f}" if "short_train_ap" in r else "",
                      f"{r['short_train_loss']:.3f}" if "short_train_loss" in r else ""]
        cells += [r["stem"], r["stages"], r["neck"], "/".join(map(str, r["head"])), r["seed"] or ""]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    check = result.get("latency_check")
    if check:
        t, s, raw = check["table"], check["same_turns"], check.get("raw_sum")
        lines += ["", f"Latency check on {t['n']} front members, measured end to end (export_onnx, decode included): "
                  f"median error of the prediction {100 * t['raw_median']:.1f}% (max {100 * t['raw_max']:.1f}%)"
                  + (f"; of the raw sum of parts {100 * raw['raw_median']:.1f}%" if raw and how else "")
                  + (f"; after a linear correction fitted on the other front members (leave-one-out) "
                     f"{100 * t['corrected_loo_median']:.1f}%" if t["corrected_loo_median"] is not None else "")
                  + f"; the raw parts re-measured in the same turns as the whole: {100 * s['raw_median']:.1f}%. "
                  f"Load average at the end: {', '.join(f'{x:.1f}' for x in check['load_average'])}."]
    st = result.get("short_training")
    if st:
        def taus(key: str) -> str:
            return ", ".join(f"{k} {v['tau']:+.2f} (p {v['p']:.2f})" if v else f"{k} n/a"
                             for k, v in st.get(key, {}).items())
        lines += ["", f"Short training ({st['epochs']} epochs at {st['imgsz']} px on {st['images']} images) of "
                  f"{len(st['trained'])} members. Kendall tau of each estimate against its AP: {taus('kendall_tau')}; "
                  f"against its mean training loss (lower is better): {taus('kendall_tau_loss')}. +1: a larger value "
                  "of the estimate goes with a better short training, for every pair; n/a: fewer than 3 members "
                  "trained, or one side tied them all."]
    return "\n".join(lines) + "\n"


def plot_front(trials: list, rows: list[dict], path: Path, proxy: str, cap: float | None) -> None:
    """Every trial (latency vs score), the front as a line, measured latencies and the cap."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [t.user_attrs["latency_ms"] for t in trials]
    ys = [t.values[0] for t in trials]
    ax.scatter(xs, ys, s=14, c="0.6", label="trials")
    if rows:
        ax.plot([r["latency_ms"] for r in rows], [r[proxy] for r in rows], "o-", c="C0", label="front (predicted)")
        m = [r for r in rows if "measured_ms" in r]
        if m:
            ax.scatter([r["measured_ms"] for r in m], [r[proxy] for r in m], marker="x", c="C3",
                       label="front (measured)")
    for t in trials:
        if t.user_attrs.get("seed"):
            ax.annotate(t.user_attrs["seed"], (t.user_attrs["latency_ms"], t.values[0]), fontsize=7)
    if cap is not None:
        ax.axvline(cap, ls="--", c="C1", label=f"cap {cap:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(proxy)
    ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
