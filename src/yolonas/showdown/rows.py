"""The run folder of one data set, runs/showdown/<name>/<data set>/: one <model>_seed<k>.json per finished run of a
model, so that separate calls (other models, other seeds) merge."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from yolonas.showdown.config import FAMILIES

logger = logging.getLogger(__name__)

# Ours first, then the peers, each family by model size.
TABLE_ORDER = tuple(m for names in FAMILIES.values() for m in names)
ROW_FILE = re.compile(r"^(?P<model>.+)_seed(?P<seed>-?\d+)\.json$")


def row_path(run: Path, model: str, seed: int) -> Path:
    """Where the row of one model and seed lives in the run folder."""
    return run / f"{model}_seed{seed}.json"


def model_dir(run: Path, model: str, seed: int) -> Path:
    """The working folder of one model and seed (training, exports, predictions)."""
    return run / model / f"seed{seed}"


def save_row(row: dict, path: Path) -> None:
    """Write one row (its status says whether it ran)."""
    path.write_text(json.dumps(row, indent=2) + "\n")
    logger.info("showdown: %s seed %s %s -> %s", row["model"], row.get("seed"), row["status"], path)


def load_rows(run: Path) -> list[dict]:
    """Every <model>_seed<k>.json of a run folder, in table order then by seed; other JSON files are not rows."""
    found = []
    for path in run.glob("*_seed*.json"):
        m = ROW_FILE.match(path.name)
        if m and m["model"] in TABLE_ORDER:
            found.append((TABLE_ORDER.index(m["model"]), int(m["seed"]), path))
    return [json.loads(path.read_text()) for _, _, path in sorted(found)]
