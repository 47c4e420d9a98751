"""Selective (hybrid) INT8: from a sensitivity report, choose the convs kept float under an accuracy or speed budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from yolonas.deploy.timing import ort_runner, ort_session, time_blocks
from yolonas.errors import InputError
from yolonas.quant.sensitivity import Evaluator, LayerSensitivity, SensitivityReport


def priority(report: SensitivityReport) -> list[LayerSensitivity]:
    """Layers in the order they are kept float: most error removed per ms of INT8 saving given up first.

    Layers whose float copy does not help (sensitivity <= 0) never come first, whatever their cost.
    """
    def key(lay: LayerSensitivity) -> tuple:
        helps = lay.sensitivity > 0
        return (not helps, -lay.sensitivity / max(lay.saving_ms, 1e-3) if helps else lay.saving_ms)

    return sorted(report.layers, key=key)


def measure_latency(models: dict[str, object], batch: np.ndarray, threads: int = 2, blocks: int = 5,
                    runs: int = 5) -> dict[str, float]:
    """Median forward ms per model (path or ModelProto) on one image, timed the one way (deploy.timing)."""
    fns = {k: ort_runner(ort_session(m, threads), batch[:1]) for k, m in models.items()}
    return time_blocks(fns, blocks=blocks, runs=runs, warmup=1).medians()


@dataclass
class Selection:
    """The convs kept float, and what the hybrid model measured."""

    float_layers: list[str]  # module names
    float_nodes: list[str]
    error: float  # output error of the hybrid (same metric as the report)
    full_int8_error: float
    max_error: float | None
    min_speedup_fraction: float | None
    predicted_speedup_fraction: float  # from the profiled per-layer savings
    measured_ms: dict[str, float] = field(default_factory=dict)  # fp32, int8, hybrid forward ms (interleaved)
    budget_met: bool = True
    steps: list[dict] = field(default_factory=list)  # every prefix evaluated: k, error

    @property
    def measured_speedup_fraction(self) -> float | None:
        """(fp32 - hybrid) / (fp32 - int8) from the interleaved timing: 1 = all of full INT8's speed-up."""
        m = self.measured_ms
        if not m:
            return None
        return (m["fp32"] - m["hybrid"]) / max(m["fp32"] - m["int8"], 1e-9)

    def to_dict(self) -> dict:
        return {**asdict(self), "measured_speedup_fraction": self.measured_speedup_fraction}


def select(report: SensitivityReport, evaluator: Evaluator, *, max_error: float | None = None,
           min_speedup_fraction: float | None = None, max_layers: int | None = None,
           measure: bool = True) -> Selection:
    """Choose the float convs: the shortest prefix of `priority(report)` whose measured output error is at most
    `max_error`, and/or the longest whose profiled savings keep at least `min_speedup_fraction` of full INT8's
    speed-up (then checked by timing, shortened while the timing says otherwise). Both: the accuracy choice if
    it fits the speed budget, else the speed choice with `budget_met=False`."""
    if max_error is None and min_speedup_fraction is None:
        raise InputError("selective quantization needs a budget: --max-error and/or --min-speedup")
    if min_speedup_fraction is not None and not 0 <= min_speedup_fraction <= 1:
        raise InputError(f"--min-speedup {min_speedup_fraction}: a fraction of full INT8's speed-up in [0, 1]")
    order = priority(report)
    if max_layers is not None:
        order = order[:max_layers]
    savings = np.array([max(lay.saving_ms, 0.0) for lay in order])
    total_saving = max(sum(max(lay.saving_ms, 0.0) for lay in report.layers), 1e-9)
    predicted = 1 - np.concatenate([[0.0], np.cumsum(savings)]) / total_saving  # fraction kept at prefix k
    errors: dict[int, float] = {}

    def err(k: int) -> float:
        if k not in errors:
            errors[k] = evaluator.error(float_layers=[lay.node for lay in order[:k]]).total
        return errors[k]

    full = err(0)
    k_acc = None if max_error is None else _accuracy_prefix(err, len(order), max_error)
    k_lat = None
    if min_speedup_fraction is not None:
        # Only layers whose float copy helps are worth any of the speed-up.
        helpful = sum(lay.sensitivity > 0 for lay in order)
        k_lat = min(int(np.nonzero(predicted >= min_speedup_fraction)[0].max()), helpful)
    k = k_acc if k_lat is None else k_lat if k_acc is None else min(k_acc, k_lat)
    measured: dict[str, float] = {}
    fraction = None
    if measure:
        k, measured, fraction = _timed_prefix(evaluator, order, k, min_speedup_fraction)
    met = max_error is None or err(k) <= max_error
    if min_speedup_fraction is not None:
        met = met and (fraction if fraction is not None else predicted[k]) >= min_speedup_fraction
    chosen = order[:k]
    return Selection([lay.module for lay in chosen], [lay.node for lay in chosen], err(k), full, max_error,
                     min_speedup_fraction, float(predicted[k]), measured, bool(met),
                     [{"k": key, "error": value} for key, value in sorted(errors.items())])


def _accuracy_prefix(err, n: int, max_error: float) -> int:
    """The shortest prefix length k (of n candidates) whose output error err(k) is within `max_error`; n when even
    every candidate float does not reach it (the best there is)."""
    if err(0) <= max_error:
        return 0
    if err(n) > max_error:
        return n
    lo, hi = 0, n  # the error falls (about monotonically) with k: bisect for the shortest prefix within budget
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if err(mid) > max_error else (lo, mid)
    return hi


def _timed_prefix(evaluator: Evaluator, order: list, k: int,
                  min_speedup_fraction: float | None) -> tuple[int, dict[str, float], float]:
    """(k, latencies, speed-up fraction kept) after timing the hybrid: scattered float islands cost Q/DQ that the
    profile does not show, so a prefix the timing finds too slow is halved and timed again (three tries)."""
    for _ in range(3):
        measured = measure_latency({"fp32": evaluator.calib.model, "int8": evaluator.variant(),
                                    "hybrid": evaluator.variant([lay.node for lay in order[:k]])},
                                   evaluator.batch, evaluator.threads)
        fraction = (measured["fp32"] - measured["hybrid"]) / max(measured["fp32"] - measured["int8"], 1e-9)
        if min_speedup_fraction is None or fraction >= min_speedup_fraction or k == 0:
            break
        k = k // 2
    return k, measured, fraction
