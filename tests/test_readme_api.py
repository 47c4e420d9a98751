"""The README's Python API block, run exactly as written, in a folder holding the files it names."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- tested: Python API"


def readme_block(marker: str = MARKER) -> str:
    """The python block that follows `marker` in the README."""
    text = README.read_text()
    return text[text.index(marker):].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_top_level_names_the_readme_uses():
    import yolonas  # noqa: PLC0415
    from yolonas.infer import Predictor, TileConfig  # noqa: PLC0415

    assert yolonas.Predictor is Predictor and yolonas.TileConfig is TileConfig
    assert {"Predictor", "TileConfig", "Detections", "NMSConfig"} <= set(yolonas.__all__)


def test_python_api_block_runs_as_written(coco128, tmp_path, monkeypatch):
    """The quick start's checkpoint (a small stand-in, trained weights do not matter here) and a folder of images
    exist; then every line of the block runs, to_supervision() included."""
    pytest.importorskip("supervision", reason="the supervision extra (make install installs it)")
    from yolonas.arch.model import build  # noqa: PLC0415
    from yolonas.arch.spec import yolo_nas_tiny  # noqa: PLC0415
    from yolonas.weights import COCO_CLASSES  # noqa: PLC0415

    model = build(yolo_nas_tiny(), class_names=COCO_CLASSES)
    model.preprocessing.image_size = (128, 128)
    best = tmp_path / "runs" / "train" / "quickstart" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    model.save(best)
    (tmp_path / "images").mkdir()
    for image in sorted((coco128 / "images" / "train2017").glob("*.jpg"))[:2]:
        shutil.copy(image, tmp_path / "images" / image.name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_block(), "README.md (Python API)", "exec"), namespace)  # noqa: S102 - the README's own code
    assert len(namespace["dets"]) == 2  # the tiled predictor's, one per image
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "my_arch.yaml").is_file()
    assert namespace["model"].class_names == list(COCO_CLASSES)  # the checkpoint was loaded, not a random spec
