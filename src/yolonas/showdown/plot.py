"""The frontier plot: AP against ONNX Runtime latency, a Pareto line per family; a Figure, no pyplot."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yolonas.nas.pareto import pareto_front

COLORS = {"YOLO-NAS": "tab:blue", "YOLOv8": "tab:orange"}
# (latency field, AP field, filled marker): fp32 filled, INT8 hollow
POINTS = (("latency_fp32_ms", "AP", True), ("latency_int8_ms", "AP_int8", False))


def _family_points(ax: Axes, rows: list[dict], fam: str, color: str) -> list[tuple[float, float]]:
    """Scatter and label one family's (latency, AP points) markers; the points drawn."""
    points = []
    for r in rows:
        if r["status"] != "ok" or r["family"] != fam:
            continue
        for lat_key, ap_key, filled in POINTS:
            if r.get(lat_key) is None or r.get(ap_key) is None:
                continue
            x, y = r[lat_key], 100 * r[ap_key]
            points.append((x, y))
            ax.scatter([x], [y], s=60, facecolors=color if filled else "none", edgecolors=color, linewidths=1.5,
                       zorder=3)
            ax.annotate(r["model"] + ("" if filled else " INT8"), (x, y), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    return points


def frontier_figure(rows: list[dict]) -> Figure:
    """AP vs ONNX Runtime latency: fp32 filled, INT8 hollow markers, a Pareto line per family."""
    fig = Figure(figsize=(7, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for fam, color in COLORS.items():
        front = pareto_front(_family_points(ax, rows, fam, color))
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=1.2, label=f"{fam} Pareto")
    ax.scatter([], [], facecolors="grey", edgecolors="grey", label="fp32")
    ax.scatter([], [], facecolors="none", edgecolors="grey", label="INT8")
    backend = next((f"{r['backend']}, {r['threads']} threads" for r in rows if r["status"] == "ok"), "")
    ax.set_xlabel(f"latency, ms (ONNX forward, batch 1; {backend})")
    ax.set_ylabel("mAP@[.5:.95], points (our COCO evaluator)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_frontier(rows: list[dict], path: Path) -> Path:
    """The frontier plot of `rows` as a PNG at `path`."""
    frontier_figure(rows).savefig(path, dpi=120)
    return path
