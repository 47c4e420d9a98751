"""Validation: the Predictor that `predict` uses, over a data set's original images, scored by COCO metrics."""

from __future__ import annotations

import json
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from yolonas.errors import DataError, InputError
from yolonas.eval.coco import Metrics, coco_metrics, confusion_matrix
from yolonas.eval.plots import plot_confusion_matrix, plot_pr_curves
from yolonas.infer.postprocess import VAL_NMS, NMSConfig
from yolonas.infer.predictor import Predictor
from yolonas.infer.tiling import TileConfig

log = logging.getLogger(__name__)


def _load_or_none(dataset, i: int):
    """The image, or None with a warning when it does not decode (its boxes then count as missed)."""
    try:
        return dataset.load_image(i)
    except DataError as e:
        warnings.warn(f"val: skipped {e}", stacklevel=2)
        return None


def _unnamed(names) -> bool:
    """True for the placeholder names "0".."N-1" (a data.yaml with `nc` and no `names`)."""
    return all(n == str(i) for i, n in enumerate(names))


def _name_classes(dataset, model_names: list[str] | None) -> None:
    """A data set whose classes are unnamed takes the model's names when the counts match, with one warning."""
    if not model_names or not _unnamed(dataset.class_names) or _unnamed(model_names):
        return
    if len(model_names) == len(dataset.class_names):
        shown = ", ".join(model_names[:5]) + (", ..." if len(model_names) > 5 else "")
        log.warning("%s: the data set gives a class count but no names: using the model's %d (%s)",
                    dataset.report.source, len(model_names), shown)
        dataset.class_names = list(model_names)


def predict_dataset(predictor: Predictor, dataset, batch_size: int = 8) -> list[dict]:
    """COCO results for every image of `dataset`: its own category ids, xywh in original pixels, `file_name`."""
    category_ids = list(dataset.category_ids)
    results: list[dict] = []
    # Decoding images is most of the CPU cost of validation; OpenCV releases the GIL, so threads overlap it.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for start in range(0, len(dataset), batch_size):
            index = range(start, min(start + batch_size, len(dataset)))
            loaded = list(pool.map(lambda i: _load_or_none(dataset, i), index))
            index = [i for i, image in zip(index, loaded) if image is not None]
            images = [image for image in loaded if image is not None]
            files = [dataset.files[i] for i in index]
            for i, file, det in zip(index, files, predictor.predict_arrays(images, files) if images else []):
                for row in det.to_coco(int(dataset.image_ids[i]), category_ids):
                    row["file_name"] = file
                    results.append(row)
    return results


def validate(
    model_or_predictor,
    dataset,
    nms: NMSConfig = VAL_NMS,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    save_predictions: str | Path | None = None,
    plots_dir: str | Path | None = None,
    half: bool = False,
    tiles: TileConfig | None = None,
) -> Metrics:
    """COCO box metrics of a model (or a ready `Predictor`) on `dataset`; optionally the predictions JSON and plots.

    A model is wrapped in `Predictor(model, nms, device, batch_size)`: the same pre- and post-processing as
    `predict`, only the thresholds differ (validation: score 0.01, top-k 1000, max 300, IoU 0.7); with `tiles`,
    tiled as `predict --tile` is.
    """
    predictor = model_or_predictor
    if not isinstance(predictor, Predictor):
        predictor = Predictor(model_or_predictor, nms=nms, device=device, batch_size=batch_size, half=half,
                              tiles=tiles)
    names = predictor.class_names
    _name_classes(dataset, names)
    if names is not None and len(names) != len(dataset.class_names):
        raise InputError(f"the model has {len(names)} classes but the data set {dataset.report.source} has "
                         f"{len(dataset.class_names)}; validate on data with the model's classes")
    tiling = f"; {predictor.tiles.describe()}" if predictor.tiles is not None else ""
    log.info("val: %d images, %s%s", len(dataset), predictor.nms.describe(), tiling)
    results = predict_dataset(predictor, dataset, batch_size)
    gt = dataset.to_coco()
    metrics = coco_metrics(gt, results)
    if save_predictions is not None:
        path = Path(save_predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results))
        log.info("val: %d predictions written to %s", len(results), path)
    if plots_dir is not None:
        folder = Path(plots_dir)
        folder.mkdir(parents=True, exist_ok=True)
        plot_pr_curves(metrics, folder / "pr_curves.png")
        matrix = confusion_matrix(gt, results, num_classes=len(gt["categories"]))
        plot_confusion_matrix(matrix, metrics.class_names, folder / "confusion_matrix.png")
    return metrics
