"""Pseudo-labelling: a trained teacher labels unlabelled images and writes a data set that training can mix in.

Each detection (after NMS at the lowest threshold in use) falls in one of three bands:

- score >= threshold[class]: a label, trained on like a real one;
- ignore_below <= score < threshold[class]: an ignore region. It is written as a crowd box (YOLO: a line in
  `ignore/<image>.txt`; COCO: `iscrowd: 1`), which the data sets read back as crowd; the trainer keeps crowd
  boxes as regions where anchors that no label claims get no classification loss at all (`data.ignore_crowd`,
  on by default), so an object the teacher was unsure of is neither learnt as an object nor as background;
- below ignore_below: background, as usual.

The images are linked (or copied) into `<out>/images/`, so the labels can sit beside them in the YOLO layout
without touching the source folder; `<out>/data.yaml` (or `annotations.json`) names them, and `mix_data_yaml`
writes a data.yaml whose training split lists a real data set's images and the pseudo-labelled ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from yolonas.arch.model import YoloNAS
from yolonas.data.images import list_images
from yolonas.data.yolo import ignore_path, label_path, read_data_yaml, split_images, write_yolo_labels
from yolonas.errors import InputError
from yolonas.infer.detections import Detections
from yolonas.infer.postprocess import NMSConfig
from yolonas.infer.predictor import Predictor
from yolonas.weights import load

log = logging.getLogger(__name__)


@dataclass
class PseudoLabelReport:
    """What a pseudo-labelling run produced: counts per class, empty images, the thresholds used, where it went."""

    images: int
    boxes_per_class: dict[str, int]
    ignored_per_class: dict[str, int]
    images_without_boxes: int
    thresholds: dict[str, float]
    ignore_below: float
    format: str
    out_dir: str
    data: str  # the data.yaml (yolo) or annotations.json (coco) to train on

    @property
    def boxes(self) -> int:
        return sum(self.boxes_per_class.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "boxes": self.boxes, "ignored": sum(self.ignored_per_class.values())}

    def table(self) -> str:
        """A plain-text table: per class its threshold, labels and ignore regions, then the totals."""
        width = max(8, *(len(n) for n in self.boxes_per_class))
        lines = [f"{'class':<{width}}  threshold  labels  ignored"]
        for name, n in self.boxes_per_class.items():
            lines.append(f"{name:<{width}}  {self.thresholds[name]:>9.2f}  {n:>6}  {self.ignored_per_class[name]:>7}")
        lines.append(f"{'all':<{width}}  {'':>9}  {self.boxes:>6}  {sum(self.ignored_per_class.values()):>7}")
        lines.append(f"{self.images} images, {self.images_without_boxes} without labels; ignore band from "
                     f"{self.ignore_below:g}; {self.format} data: {self.data}")
        return "\n".join(lines)


def class_thresholds(threshold: float | Sequence[float] | dict[str, float], class_names: Sequence[str]) -> np.ndarray:
    """Per-class confidence thresholds [C] from one number, a list in class order, or a {name: value} map
    (classes it does not name keep the map's "default", else 0.5)."""
    names = list(class_names)
    if isinstance(threshold, (int, float)):
        values = [float(threshold)] * len(names)
    elif isinstance(threshold, dict):
        unknown = [k for k in threshold if k not in names and k != "default"]
        if unknown:
            raise InputError(f"threshold given for unknown class {unknown[0]!r}; classes: {', '.join(names)}")
        default = float(threshold.get("default", 0.5))
        values = [float(threshold.get(n, default)) for n in names]
    else:
        values = [float(v) for v in threshold]
        if len(values) != len(names):
            raise InputError(f"{len(values)} thresholds given for {len(names)} classes")
    arr = np.asarray(values, dtype=np.float32)
    if ((arr <= 0) | (arr > 1)).any():
        raise InputError(f"confidence thresholds must lie in (0, 1], got {arr.tolist()}")
    return arr


def split_bands(det: Detections, thresholds: np.ndarray, ignore_below: float) -> tuple[np.ndarray, np.ndarray]:
    """(label mask, ignore mask) over one image's detections: score >= its class threshold, or in the band below."""
    label = det.scores >= thresholds[det.class_ids]
    return label, ~label & (det.scores >= ignore_below)


def _place_image(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    if link:
        try:
            os.symlink(src.resolve(), dst)
            return
        except OSError:
            pass  # a file system without symlinks: fall back to a copy
    shutil.copy2(src, dst)


def _images_to_label(images: str | Path | Sequence[str | Path]) -> tuple[list[Path], Path]:
    """(the image files, the folder their output paths are relative to): a folder's images, recursively, or a list."""
    if isinstance(images, (str, Path)):
        root = Path(images)
        if not root.is_dir():
            raise InputError(f"{root}: not a folder of images")
        paths = list_images(root)
    else:
        paths = [Path(p) for p in images]
        root = Path(os.path.commonpath([p.parent.absolute() for p in paths])) if paths else Path(".")
    if not paths:
        raise InputError(f"{images}: no images to label")
    return paths, root


def _write_data_file(out: Path, fmt: str, names: list[str], coco_images: list[dict], coco_anns: list[dict]) -> Path:
    """The labelled set's data.yaml (YOLO) or annotations.json (COCO)."""
    if fmt == "yolo":
        data = out / "data.yaml"
        data.write_text(yaml.safe_dump({"path": ".", "train": "images", "val": "images", "nc": len(names),
                                        "names": names}, sort_keys=False))
    else:
        data = out / "annotations.json"
        data.write_text(json.dumps({"images": coco_images, "annotations": coco_anns, "categories": [
            {"id": i + 1, "name": n} for i, n in enumerate(names)]}))
    return data


def pseudo_label(teacher: YoloNAS | str | Path, images: str | Path | Sequence[str | Path], out_dir: str | Path,
                 threshold: float | Sequence[float] | dict[str, float] = 0.5, ignore_below: float = 0.2,
                 fmt: str = "yolo", batch_size: int = 8, device: str = "cpu", link: bool = True,
                 verbose: bool = True) -> PseudoLabelReport:
    """Label `images` (a folder, searched recursively, or a list of image files) with `teacher` into `out_dir`."""
    if fmt not in ("yolo", "coco"):
        raise InputError(f"pseudo-label format must be yolo or coco, got {fmt!r}")
    model = load(teacher) if isinstance(teacher, (str, Path)) else teacher
    names = list(model.class_names)
    thr = class_thresholds(threshold, names)
    if not 0 < ignore_below <= float(thr.min()):
        raise InputError(f"ignore_below must lie in (0, the lowest threshold {thr.min():g}], got {ignore_below:g}")
    paths, root = _images_to_label(images)
    out = Path(out_dir)
    for sub in ("images", "labels", "ignore"):  # a rerun replaces, never mixes with, an earlier one
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    nms = NMSConfig(score_threshold=ignore_below, iou_threshold=0.7, top_k=1000, max_detections=300)
    predictor = Predictor(model, nms=nms, device=device, batch_size=batch_size)
    rel = {str(p): p.absolute().relative_to(root) if p.absolute().is_relative_to(root) else Path(p.name)
           for p in paths}
    counts, ignored = np.zeros(len(names), np.int64), np.zeros(len(names), np.int64)
    empty = 0
    coco_images, coco_anns = [], []
    for k, (name, _, det) in enumerate(predictor.stream([str(p) for p in paths]), start=1):
        dst = out / "images" / rel[name]
        _place_image(Path(name), dst, link)
        keep, band = split_bands(det, thr, ignore_below)
        counts += np.bincount(det.class_ids[keep], minlength=len(names))
        ignored += np.bincount(det.class_ids[band], minlength=len(names))
        empty += int(not keep.any())
        if fmt == "yolo":
            write_yolo_labels(label_path(dst), det.boxes[keep], det.class_ids[keep], det.image_shape)
            if band.any():
                write_yolo_labels(ignore_path(dst), det.boxes[band], det.class_ids[band], det.image_shape)
        else:
            h, w = det.image_shape
            coco_images.append({"id": k, "file_name": str(rel[name]), "height": int(h), "width": int(w)})
            for box, c, s, crowd in zip(det.boxes, det.class_ids, det.scores, band):
                if not (crowd or s >= thr[c]):
                    continue
                x1, y1, x2, y2 = (float(v) for v in box)
                coco_anns.append({"id": len(coco_anns) + 1, "image_id": k, "category_id": int(c) + 1,
                                  "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                  "iscrowd": int(crowd), "score": float(s)})
    n_images = len(paths) - len(predictor.skipped)
    data = _write_data_file(out, fmt, names, coco_images, coco_anns)
    report = PseudoLabelReport(
        images=n_images, boxes_per_class=dict(zip(names, counts.tolist())),
        ignored_per_class=dict(zip(names, ignored.tolist())), images_without_boxes=empty,
        thresholds=dict(zip(names, [round(float(t), 4) for t in thr])), ignore_below=float(ignore_below),
        format=fmt, out_dir=str(out), data=str(data))
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if verbose:
        log.info("%s", report.table())
    return report


def mix_data_yaml(real: str | Path, pseudo: str | Path, out: str | Path, split: str = "train") -> Path:
    """A data.yaml training on `real`'s `split` plus the pseudo-labelled images of `pseudo` (a data.yaml or its
    folder); validation and test stay `real`'s. Both must name the same classes."""
    real, pseudo = Path(real), Path(pseudo)
    pseudo = pseudo / "data.yaml" if pseudo.is_dir() else pseudo
    rd, pd = read_data_yaml(real), read_data_yaml(pseudo)
    if rd["names"] != pd["names"]:
        raise InputError(f"{pseudo}: classes {pd['names']} differ from {real}'s {rd['names']}")
    entries = [str(p.absolute()) for p in split_images(real, split, rd) + split_images(pseudo, "train", pd)]
    mixed = {"train": entries, "nc": rd["nc"], "names": rd["names"]}
    for key in ("val", "test"):
        if rd.get(key):
            mixed[key] = [str(p.absolute()) for p in split_images(real, key, rd)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(mixed, sort_keys=False))
    return out
