"""The peer scripts here share the showdown child's offline helpers, which ship inside the package
(src/yolonas/showdown/peer_child/ultralytics_offline.py): go_offline(), settings(), NETWORK_ATTEMPTS and WORK (the
Ultralytics venv's work folder), plus REPO, this checkout."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "src" / "yolonas" / "showdown" / "peer_child"))

from ultralytics_offline import NETWORK_ATTEMPTS, WORK, go_offline, settings  # noqa: E402

__all__ = ["NETWORK_ATTEMPTS", "REPO", "WORK", "go_offline", "settings"]
