"""Hardware-aware architecture search: search space, latency model, accuracy estimates, NSGA-II driver, report."""

from yolonas.nas.latency import LatencyModel, LatencyTable, Part, fit_correction, prediction_errors, spec_parts
from yolonas.nas.pareto import pareto_front
from yolonas.nas.proxies import PROXIES, meco, size_proxies
from yolonas.nas.report import front_markdown, plot_front
from yolonas.nas.result import SearchResult
from yolonas.nas.search import SearchConfig, search
from yolonas.nas.space import SearchSpace, calibration_specs, contains, decode, encode, sample, seeds, spec_hash

__all__ = [
    "PROXIES", "LatencyModel", "LatencyTable", "Part", "SearchConfig", "SearchResult", "SearchSpace",
    "calibration_specs", "contains", "decode", "encode", "fit_correction", "front_markdown", "meco", "pareto_front",
    "plot_front", "prediction_errors", "sample", "search", "seeds", "size_proxies", "spec_hash", "spec_parts",
]
