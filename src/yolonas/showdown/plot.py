"""The frontier plot: AP against latency (fp32 on ONNX Runtime, INT8 on OpenVINO), one colour per family, a Pareto
line each; a Figure, no pyplot."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from yolonas.nas.pareto import pareto_front
from yolonas.showdown.rows import ShowdownRow

COLORS = {"YOLO-NAS": "tab:blue", "YOLOv8": "tab:orange", "YOLO11": "tab:green", "YOLO26": "tab:red"}
# (latency, AP, marker, filled) of a row: fp32 filled circles, INT8 hollow triangles
POINTS = ((lambda r: (r.latency_fp32_ms, r.AP), "o", True), (lambda r: (r.latency_int8_ms, r.AP_int8), "^", False))


def _family_points(ax: Axes, rows: list[ShowdownRow], fam: str, color: str) -> list[tuple[float, float]]:
    """Scatter and label one family's (latency, AP points) markers; the points drawn."""
    points = []
    for r in rows:
        if not r.ok or r.family != fam:
            continue
        for point, marker, filled in POINTS:
            latency, ap = point(r)
            if latency is None or ap is None:
                continue
            x, y = latency, 100 * ap
            points.append((x, y))
            ax.scatter([x], [y], s=60, marker=marker, facecolors=color if filled else "none", edgecolors=color,
                       linewidths=1.5, zorder=3)
            ax.annotate(r.model + ("" if filled else " INT8"), (x, y), textcoords="offset points",
                        xytext=(5, 4), fontsize=8)
    return points


def frontier_figure(rows: list[ShowdownRow], title: str = "") -> Figure:
    """AP vs latency: fp32 filled circles, INT8 hollow triangles, a colour and a Pareto line per family."""
    fig = Figure(figsize=(7, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for fam, color in COLORS.items():
        front = pareto_front(_family_points(ax, rows, fam, color))
        if front:
            ax.plot([p[0] for p in front], [p[1] for p in front], color=color, lw=1.2, label=f"{fam} Pareto")
    ax.scatter([], [], marker="o", facecolors="grey", edgecolors="grey", label="fp32 (ONNX Runtime)")
    ax.scatter([], [], marker="^", facecolors="none", edgecolors="grey", label="INT8 (OpenVINO IR)")
    threads = next((f"{r.threads} threads" for r in rows if r.ok), "")
    ax.set_xlabel(f"latency, ms (bare forward, batch 1, {threads})")
    if title:
        ax.set_title(title)
    ax.set_ylabel("mAP@[.5:.95], points (our COCO evaluator)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_frontier(rows: list[ShowdownRow], path: Path, title: str = "") -> Path:
    """The frontier plot of `rows` as a PNG at `path`."""
    frontier_figure(rows, title).savefig(path, dpi=120)
    return path
