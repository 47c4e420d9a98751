"""Training data loader throughput: ours alone, or side by side with Ultralytics' own training loader (issue 18).

Default: images/s of our loader with the scratch recipe's augmentation set (mosaic, affine, HSV, flip) at 640 on
coco128 for 0, 1 and 2 workers, and ms per stage -> results/dataloader.{json,md}.

--vs-ultralytics: ours and Ultralytics' (benchmarks/peers/ultralytics_loader.py, run in .venv-ultralytics) on the
same images (aquarium's train split), the same augmentation set at 640, batch 16, for 2, 1 and 0 workers; epochs
alternate between the two, block by block (who goes first alternates too), and the ratio is taken per block ->
results/dataloader_vs_ultralytics.{json,md}. Data root: $YOLONAS_DATASETS, else ../shared/datasets.

    python benchmarks/dataloader.py [--size 640] [--batch 16] [--epochs 3] [--workers 0 1 2] [--data data.yaml]
    python benchmarks/dataloader.py --vs-ultralytics [--blocks 7] [--workers 2 1 0] [--mixup 0.5 --name ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from yolonas.data import TrainDataset, collate, load_data_yaml, make_loader
from yolonas.data.loader import FittedImages, RandomSample, Transformed, keep_freed_memory, training_transforms
from yolonas.data.transforms import (
    HSV,
    Compose,
    HorizontalFlip,
    MixUp,
    Mosaic,
    MosaicAffine,
    PlanarLayout,
    RandomAffine,
    resize_to_fit,
)
from yolonas.deploy.timing import cpu_info
from yolonas.train.config import load_recipe

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / "benchmarks" / "peers" / "ultralytics_loader.py"
PEER_PYTHON = REPO / ".venv-ultralytics" / "bin" / "python"
PEER_LOG = REPO / ".venv-ultralytics" / "work" / "loader" / "peer.log"  # its stderr, out of the repo's results


def data_root() -> Path:
    return Path(os.environ.get("YOLONAS_DATASETS", REPO.parent / "shared" / "datasets"))


# ------------------------------------------------------------------------------------------- augmentation set


def augmentation(recipe: str, mixup: float | None) -> dict[str, Any]:
    """training_transforms keyword arguments of a recipe's augmentation section (mixup overridden when given)."""
    aug = load_recipe(recipe).augmentation
    return {"mosaic": aug.mosaic, "mixup": aug.mixup if mixup is None else mixup, "degrees": aug.degrees,
            "translate": aug.translate, "scale": tuple(aug.scale), "shear": aug.shear, "hsv": aug.hsv,
            "hsv_gains": tuple(aug.hsv_gains), "flip": aug.flip, "channel_swap": aug.channel_swap,
            "pad_value": aug.pad_value}


def ultralytics_hyp(aug: dict[str, Any]) -> dict[str, float]:
    """Ultralytics' hyperparameters closest to our augmentation set (see NOT_MATCHED for what differs)."""
    lo, hi = aug["scale"]
    if abs(lo + hi - 2) > 1e-9 or aug["hsv"] not in (0.0, 1.0) or aug["pad_value"] != 114:
        raise SystemExit(f"augmentation {aug} has no Ultralytics counterpart: its scale range is 1 +- gain, HSV "
                         "is always on, and it pads with 114")
    h, s, v = aug["hsv_gains"] if aug["hsv"] else (0, 0, 0)
    return {"mosaic": aug["mosaic"], "mixup": aug["mixup"], "degrees": aug["degrees"],
            "translate": aug["translate"], "scale": (hi - lo) / 2, "shear": aug["shear"],
            # ours shifts H in OpenCV units (0..179) and S, V additively (0..255); its gains are fractions of them
            "hsv_h": h / 180, "hsv_s": s / 255, "hsv_v": v / 255, "fliplr": aug["flip"], "bgr": aug["channel_swap"]}


NOT_MATCHED = [
    "HSV: ours adds a shift to H, S and V (each of the three applied with probability 0.5, as in super-gradients); "
    "Ultralytics adds to H but multiplies S and V by 1 +- gain, always; gains set to the same largest shift at full "
    "scale (hsv_h = h/180, hsv_s = s/255, hsv_v = v/255). Both convert RGB->HSV->RGB; Ultralytics then passes all "
    "three channels through a LUT, ours only the hue plane when a hue shift is drawn (S and V by a saturating add), "
    "and ours skips the conversions when no shift at all is drawn (1 in 8).",
    "MixUp: ours blends 0.5/0.5; Ultralytics draws the weight from Beta(32, 32) (mean 0.5). Both run the partner "
    "through mosaic + affine first.",
    "Mosaic partners: ours draws the 3 other images from the whole data set; Ultralytics from its buffer of "
    "recently decoded images (up to min(n, 8 x batch, 1000) - 1 = 126 of the 127 here, per worker).",
    "Ultralytics' extras with no counterpart in ours, all off: CutMix, CopyPaste (0.0 by default), Albumentations "
    "(not installed in .venv-ultralytics; switched off by the peer if it were), vertical flip (flipud 0.0), "
    "perspective 0.0.",
    "Output: ours gives uint8 [B, 3, H, W] RGB plus xyxy pixel targets padded per image; Ultralytics uint8 "
    "[B, 3, H, W] RGB plus normalised xywh targets (its Format step).",
]


# --------------------------------------------------------------------------------------------------- our loader


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
    """This process and the loader's live worker processes."""
    iterator = getattr(loader, "_iterator", None)
    return [os.getpid()] + [w.pid for w in getattr(iterator, "_workers", []) if w.pid is not None]


def our_epoch(loader, epoch: int) -> dict[str, Any]:
    """One epoch of our loader: images, batches, seconds, images/s, first batch's latency, and CPU ms per image of
    this process and its workers together (as the peer reports them)."""
    loader.sampler.set_epoch(epoch)
    images, batches, first = 0, 0, None
    cpu0 = process_cpu(loader_pids(loader))
    start = time.perf_counter()
    for b in loader:
        first = first or time.perf_counter()
        images += len(b["image_ids"])
        batches += 1
    seconds = time.perf_counter() - start
    cpu = sum(v - cpu0.get(pid, 0.0) for pid, v in process_cpu(loader_pids(loader)).items())
    return {"images": images, "batches": batches, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1), "first_batch_s": round(first - start, 3),
            "cpu_ms_per_image": round(1000 * cpu / images, 2)}


def loader_throughput(train: TrainDataset, workers: int, batch: int, epochs: int, seed: int = 0) -> dict:
    """Images per second over `epochs` epochs, worker start-up included (timing from the first batch would credit
    the batches the other workers prefetch meanwhile); the first batch's latency is reported apart."""
    loader = make_loader(train, batch_size=batch, shuffle=True, workers=workers, seed=seed)
    start = time.perf_counter()
    images, first = 0, None
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for b in loader:
            first = first or time.perf_counter()
            images += len(b["image_ids"])
    seconds = time.perf_counter() - start
    shut_down(loader)
    return {"workers": workers, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1), "first_batch_s": round(first - start, 3)}


def shut_down(loader) -> None:
    """Stop a loader's persistent workers now (else they live until the loader is collected)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def _ms(fn, n: int) -> float:
    """CPU milliseconds per call of fn, over n calls (CPU time: preemption by other processes is not counted)."""
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return round(1000 * (time.process_time() - t0) / n, 2)


def stage_times(dataset, size: int, aug: dict[str, Any], n: int = 64, seed: int = 0) -> dict[str, float]:
    """CPU milliseconds per output image of each stage of our pipeline, in this process set up as a loader worker
    (OpenCV on one thread, freed memory kept: `seed_worker`). The tiles come from cached fitted images;
    `decode_fit_1_image` is what each of a mosaic's four images costs without the cache. `mosaic_4_images` and
    `affine` are the two steps apart, on the whole 2h x 2w canvas; `mosaic_affine` is the one step the pipeline
    runs. MixUp (p=1) includes its partner's own mosaic_affine."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(0)
    keep_freed_memory()
    try:
        source = FittedImages(dataset, size, budget=2**62)
        pick = RandomSample(source)
        mosaic = Mosaic(pick, size, p=1.0)
        affine = RandomAffine(size, aug["degrees"], aug["translate"], aug["scale"], aug["shear"])
        fused = MosaicAffine(mosaic, affine)
        mixup = MixUp(Transformed(pick, Compose([fused])), p=1.0)
        hsv, flip, planar = HSV(*aug["hsv_gains"], p=1.0), HorizontalFlip(p=1.0), PlanarLayout()
        rng = np.random.default_rng(seed)
        index = iter(rng.integers(len(dataset), size=4 * n).tolist())
        first = source[0]
        mosaicked = mosaic(first, rng)
        warped = affine(mosaicked, rng)
        outputs = [planar(flip(hsv(warped, rng), rng), rng)] * 16
        return {"decode_fit_1_image": _ms(lambda: resize_to_fit(dataset.load_image(next(index)), (size, size)), n),
                "cached_1_image": _ms(lambda: source[int(rng.integers(len(source)))], n),
                "mosaic_4_images": _ms(lambda: mosaic(first, rng), n),
                "affine": _ms(lambda: affine(mosaicked, rng), n),
                "mosaic_affine": _ms(lambda: fused(first, rng), n),
                "mixup": _ms(lambda: mixup(warped, rng), max(n // 4, 4)),
                "hsv": _ms(lambda: hsv(warped, rng), n),
                "flip": _ms(lambda: flip(warped, rng), n),
                "planar_layout": _ms(lambda: planar(warped, rng), n),
                "collate_per_image": round(_ms(lambda: collate(outputs), max(n // 8, 4)) / 16, 2)}
    finally:
        cv2.setNumThreads(threads)


# --------------------------------------------------------------------------------------------- the peer process


class Peer:
    """Ultralytics' loader in a child process (its own process group), stopped (SIGSTOP) between its epochs.

    Its InfiniteDataLoader keeps 4 batches per worker in flight across epochs: 8 batches, a whole aquarium epoch,
    which its workers would compute during our epoch (on the same cores) and then hand over at once in its next.
    Stopping the group right after each of its epochs means neither loader computes during the other's epoch; after
    SIGCONT its workers pick up where they were, as in a continuous run. Our workers idle between our epochs.
    """

    def __init__(self, workers: int, args: argparse.Namespace, hyp: dict[str, float], log: Path):
        cmd = [str(PEER_PYTHON), str(PEER), "--serve", "--workers", str(workers), "--data", str(args.data),
               "--imgsz", str(args.size), "--batch", str(args.batch)]
        cmd += [item for k, v in hyp.items() for item in (f"--{k.replace('_', '-')}", str(v))]
        self.log = log
        with open(log, "a") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         start_new_session=True, cwd=REPO)
        self.ready = self._read()
        self._signal(signal.SIGSTOP)

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ultralytics loader peer exited ({self.proc.poll()}); see {self.log}")
        return json.loads(line)

    def _signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)  # the group this script started: the peer and its loader workers

    def epoch(self) -> dict[str, Any]:
        """One epoch of Ultralytics' loader, run while ours is idle."""
        self._signal(signal.SIGCONT)
        self.proc.stdin.write("epoch\n")
        self.proc.stdin.flush()
        try:
            return self._read()
        finally:
            self._signal(signal.SIGSTOP)

    def close(self) -> None:
        if self.proc.poll() is None:
            self._signal(signal.SIGCONT)
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------------- side by side


def side_by_side(train: TrainDataset, workers: int, args: argparse.Namespace, hyp: dict[str, float],
                 log: Path) -> dict[str, Any]:
    """Interleaved epochs of both loaders with `workers` workers: `args.warmup` untimed epochs each (Ultralytics'
    per-worker buffer of decoded images takes a few epochs to fill: its first epochs decode most images), then
    `args.blocks` blocks of one epoch each."""
    loader = make_loader(train, batch_size=args.batch, shuffle=True, workers=workers, seed=0)
    peer = Peer(workers, args, hyp, log)
    try:
        warmup = [{"ours": our_epoch(loader, e), "ultralytics": peer.epoch()} for e in range(args.warmup)]
        blocks = []
        for k in range(args.blocks):
            epoch = args.warmup + k
            if k % 2 == 0:
                ours = our_epoch(loader, epoch)
                theirs = peer.epoch()
            else:
                theirs = peer.epoch()
                ours = our_epoch(loader, epoch)
            blocks.append({"ours": ours, "ultralytics": theirs,
                           "ratio": round(ours["images_per_s"] / theirs["images_per_s"], 3),
                           "cpu_ratio": round(theirs["cpu_ms_per_image"] / ours["cpu_ms_per_image"], 3)})
            print(f"  workers {workers} block {k}: ours {ours['images_per_s']} images/s "
                  f"({ours['cpu_ms_per_image']} CPU ms/image), Ultralytics {theirs['images_per_s']} "
                  f"({theirs['cpu_ms_per_image']}), ratio {blocks[-1]['ratio']}, CPU ratio {blocks[-1]['cpu_ratio']}",
                  flush=True)
        ready = peer.ready
    finally:
        peer.close()
        shut_down(loader)
    return summarise(workers, warmup, blocks, ready)


def summarise(workers: int, warmup: dict, blocks: list[dict], ready: dict) -> dict[str, Any]:
    """Medians over blocks of images/s, per worker (per process with 0 workers), and of the per-block ratios."""
    med = statistics.median
    ours = med(b["ours"]["images_per_s"] for b in blocks)
    theirs = med(b["ultralytics"]["images_per_s"] for b in blocks)
    ratios, cpu_ratios = [b["ratio"] for b in blocks], [b["cpu_ratio"] for b in blocks]
    per = max(workers, 1)
    return {"workers": workers, "ultralytics_num_workers": ready["num_workers"],
            "ours_images_per_s": round(ours, 1), "ultralytics_images_per_s": round(theirs, 1),
            "ours_per_worker": round(ours / per, 1), "ultralytics_per_worker": round(theirs / per, 1),
            "ratio_median": round(med(ratios), 3), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ours_cpu_ms_per_image": round(med(b["ours"]["cpu_ms_per_image"] for b in blocks), 2),
            "ultralytics_cpu_ms_per_image": round(med(b["ultralytics"]["cpu_ms_per_image"] for b in blocks), 2),
            "cpu_ratio_median": round(med(cpu_ratios), 3), "cpu_ratio_min": min(cpu_ratios),
            "cpu_ratio_max": max(cpu_ratios),
            "blocks": blocks, "warmup": warmup, "peer_ready": ready}


def machine() -> dict[str, Any]:
    return {"cpu": cpu_info().describe(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__}


def vs_markdown(result: dict[str, Any]) -> str:
    """The side-by-side result as a Markdown page."""
    m, cache = result["machine"], result["ours_cache"]
    lines = [f"# Training loader, ours vs Ultralytics ({result['size']} px, batch {result['batch']})", "",
             f"{result['data']}; {m['cpu']}; torch {m['torch']}, OpenCV {m['opencv']}, numpy {m['numpy']}, "
             f"Ultralytics {result['ultralytics']['ultralytics']}. Load average {result['load_average']['start']} "
             f"at the start, {result['load_average']['end']} at the end.", "",
             f"Augmentation (recipe `{result['recipe']}`): {result['augmentation']['ours']}; Ultralytics: "
             f"{result['augmentation']['ultralytics']}.", "",
             f"Epochs alternate between the two loaders, who goes first alternating, {result['blocks']} blocks per "
             f"worker count after {result['warmup']} warm-up epochs each; images/s are medians over blocks, the ratio "
             "is the median of per-block ratios (min-max). Per worker: images/s / workers (with 0 workers, per "
             "process). Ultralytics' process group is stopped between its epochs (see `Peer`).", "",
             "CPU ms per image: CPU time of the loader's main process and its workers over the epoch, per image "
             "(load-independent: what one core pays per image).", "",
             "| workers | ours images/s | Ultralytics images/s | ours per worker | Ultralytics per worker "
             "| ours / Ultralytics | CPU ms/image ours | Ultralytics | CPU ratio |", "|---" * 9 + "|"]
    for r in result["runs"]:
        lines.append(f"| {r['workers']} | {r['ours_images_per_s']} | {r['ultralytics_images_per_s']} | "
                     f"{r['ours_per_worker']} | {r['ultralytics_per_worker']} | **{r['ratio_median']}** "
                     f"({r['ratio_min']}-{r['ratio_max']}) | {r['ours_cpu_ms_per_image']} | "
                     f"{r['ultralytics_cpu_ms_per_image']} | {r['cpu_ratio_median']} "
                     f"({r['cpu_ratio_min']}-{r['cpu_ratio_max']}) |")
    lines += ["", f"Warm-up epochs, untimed, images/s (workers starting; Ultralytics filling its per-worker buffer "
              f"of decoded images; ours with its cache built before: {cache['cached']}/{cache['images']} images "
              f"at the training size, {cache['mb']} MB, {cache['build_s']} s once in the main process): " + "; ".join(
                  f"{r['workers']} workers: ours {[w['ours']['images_per_s'] for w in r['warmup']]}, Ultralytics "
                  f"{[w['ultralytics']['images_per_s'] for w in r['warmup']]}" for r in result["runs"]), ""]
    lines += ["Ours per stage, CPU ms per output image in one process set up as a loader worker: " + ", ".join(
        f"{k} {v}" for k, v in result["stage_ms_per_image"].items()), "", "Not matched:", ""]
    lines += [f"- {item}" for item in result["not_matched"]] + [""]
    return "\n".join(lines)


def run_vs(args: argparse.Namespace) -> None:
    """--vs-ultralytics: build ours once, then each worker count side by side; write JSON + Markdown."""
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} missing: run benchmarks/peers/ultralytics_setup.sh first")
    cv2.setNumThreads(0)  # as in a worker, and as Ultralytics sets it at import: per-core figures with 0 workers
    load_start = os.getloadavg()
    aug = augmentation(args.recipe, args.mixup)
    hyp = ultralytics_hyp(aug)
    dataset = load_data_yaml(args.data, "train")
    t0 = time.perf_counter()
    transforms = training_transforms(dataset, args.size, **aug)
    build_s = time.perf_counter() - t0
    train = TrainDataset(dataset, transforms, seed=0)
    log = PEER_LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    runs = [side_by_side(train, workers, args, hyp, log) for workers in args.workers]
    ready = [r.pop("peer_ready") for r in runs][0]
    source = train.source
    result = {
        "benchmark": "training loader images/s, ours vs Ultralytics' (build_yolo_dataset + build_dataloader), "
                     "interleaved epochs",
        "data": f"{args.data} train split, {len(dataset)} images (JPEG)", "size": args.size, "batch": args.batch,
        "recipe": args.recipe, "blocks": args.blocks, "warmup": args.warmup,
        "augmentation": {"ours": {k: list(v) if isinstance(v, tuple) else v for k, v in aug.items()},
                         "ultralytics": hyp},
        "not_matched": NOT_MATCHED, "machine": machine(),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "ours_cache": {"images": len(source), "cached": source.cached if isinstance(source, FittedImages) else 0,
                       "mb": round(source.nbytes / 2**20, 1) if isinstance(source, FittedImages) else 0,
                       "build_s": round(build_s, 2)},
        "runs": runs,
        "stage_ms_per_image": stage_times(dataset, args.size, aug),
    }
    result["ultralytics"] = ready
    write(result, args.out, args.name, vs_markdown(result))


def write(result: dict[str, Any], out: Path, name: str, markdown: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


# ------------------------------------------------------------------------------------------------ ours alone


def run_single(args: argparse.Namespace) -> None:
    """Ours alone for each worker count (default mode); JSON + Markdown."""
    data = args.data or data_root() / "coco128" / "data.yaml"
    aug = augmentation(args.recipe, args.mixup)
    dataset = load_data_yaml(data, "train")
    train = TrainDataset(dataset, training_transforms(dataset, args.size, **aug), seed=0)
    runs = [loader_throughput(train, w, args.batch, args.epochs) for w in args.workers]
    source = train.source
    result = {
        "benchmark": f"training data loader, recipe {args.recipe}: mosaic + random affine + HSV + flip, letterboxed "
                     "batches",
        "data": f"{data} (YOLO txt via data.yaml, {len(dataset)} images; {source.cached} decoded once and kept at "
                f"the training size, {source.nbytes / 2**20:.0f} MB)",
        "size": args.size, "batch": args.batch, "epochs": args.epochs, "augmentation": aug, "machine": machine(),
        "runs": runs, "stage_ms_per_image": stage_times(dataset, args.size, aug),
    }
    lines = [f"# Data loader throughput ({args.size} px, batch {args.batch})", "",
             f"{result['benchmark']}; {result['data']}.",
             f"Machine: {result['machine']['cpu']}, torch {torch.__version__}, OpenCV {cv2.__version__}.", "",
             "| workers | images/s (start-up included) | images | first batch (s) |", "|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['images_per_s']} | {r['images']} | {r['first_batch_s']} |" for r in runs]
    lines += ["", "Per stage, CPU ms per output image in one process set up as a loader worker: " + ", ".join(
        f"{k} {v}" for k, v in result["stage_ms_per_image"].items()), ""]
    write(result, args.out, args.name, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vs-ultralytics", action="store_true", help="side by side with Ultralytics' loader")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="ours alone: epochs per worker count")
    parser.add_argument("--blocks", type=int, default=9, help="side by side: interleaved blocks per worker count")
    parser.add_argument("--warmup", type=int, default=4, help="side by side: untimed epochs per loader first")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="default 0 1 2; side by side 2 1 0")
    parser.add_argument("--recipe", default="scratch_small_data", help="whose augmentation section to use")
    parser.add_argument("--mixup", type=float, default=None, help="override the recipe's mixup probability")
    parser.add_argument("--data", type=Path, default=None,
                        help="data.yaml (default: coco128's; side by side: aquarium's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", default=None, help="result files NAME.json and NAME.md (default: dataloader, "
                                                     "side by side dataloader_vs_ultralytics)")
    args = parser.parse_args()
    if args.vs_ultralytics:
        args.workers = args.workers or [2, 1, 0]
        args.data = (args.data or data_root() / "aquarium" / "data.yaml").resolve()
        args.name = args.name or "dataloader_vs_ultralytics"
        run_vs(args)
    else:
        args.workers = args.workers or [0, 1, 2]
        args.name = args.name or "dataloader"
        run_single(args)


if __name__ == "__main__":
    main()
