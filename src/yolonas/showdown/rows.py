"""The run folder runs/showdown/<name>/: one <model>.json per finished model, so that separate calls merge."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from yolonas.showdown.config import OURS, PEERS, TEST_MODELS

logger = logging.getLogger(__name__)

# Ours first, then the peer, each family by model size.
TABLE_ORDER = TEST_MODELS[:1] + OURS + TEST_MODELS[1:] + PEERS


def row_path(run: Path, model: str) -> Path:
    """Where a model's row lives in the run folder."""
    return run / f"{model}.json"


def save_row(row: dict, path: Path) -> None:
    """Write one model's row (its status says whether it ran)."""
    path.write_text(json.dumps(row, indent=2) + "\n")
    logger.info("showdown: %s %s -> %s", row["model"], row["status"], path)


def load_rows(run: Path) -> list[dict]:
    """Every <model>.json of a showdown folder, in table order; other JSON files are not rows."""
    return [json.loads(row_path(run, m).read_text()) for m in TABLE_ORDER if row_path(run, m).is_file()]
