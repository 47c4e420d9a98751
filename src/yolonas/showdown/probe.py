"""Equal training time (--minutes): a short probe of each model, trained as its real run will be, and the epochs
that fit the minutes, planned from it for a normal full schedule of that many epochs.

The probe trains PROBE_EPOCHS epochs (its last PROBE_PLAIN without mosaic, as a real run's last close-mosaic epochs
are) into <run>/probe/<model>/ and nothing else: no evaluation, export or INT8 step of the showdown. Its clock gives
the time at every saved epoch, from which the model of a run's wall-clock is

    T(E) = fixed + (E - c) * mosaic epoch + c * plain epoch,   c = min(close_mosaic, E)

where the mosaic epoch is the median of epochs 2 to 4 (after the start-up of epoch 1), the plain epoch the mean of
epochs 6 and 7 (after the switch, before the final validation) and `fixed` is what remains of the probe's whole
time: set-up, epoch 1's warm-up, the switch, the trainer's own final validation and its end. A 1-epoch probe would
spread the fixed time over every epoch (too few epochs); a probe of some steps would miss the start-up and the final
validation. The epochs planned are those whose T(E) is nearest to the minutes. The probe is saved as
<run>/probe/<model>.json and reused for every seed and by later calls while its settings hold; the real run starts
from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from yolonas.deploy.timing import cpu_info
from yolonas.errors import InputError
from yolonas.showdown.config import ShowdownConfig, is_ours

logger = logging.getLogger(__name__)

PROBE_EPOCHS = 8
PROBE_PLAIN = 4  # the probe's last epochs without mosaic
TOLERANCE = 0.10  # a row whose training time is further than this from --minutes is flagged


@dataclass
class Probe:
    """One model's probe on one data set: its per-epoch and fixed seconds, and where it ran."""

    model: str
    settings: dict  # what its times depend on; a probe with other settings is measured again
    cpu: str
    threads: int | str | None
    precision: str | None
    epoch_s: float  # an epoch with mosaic
    plain_epoch_s: float  # an epoch without mosaic
    fixed_s: float  # the rest of a run's time, whatever its epochs
    total_s: float  # the probe's own training time
    close_mosaic: int  # the real run's last epochs without mosaic (ours: the recipe's; Ultralytics': its default)
    epoch_ends: list[float] = field(default_factory=list)

    def predict_s(self, epochs: int) -> float:
        """The training seconds of a real run of `epochs` epochs."""
        plain = min(self.close_mosaic, epochs)
        return self.fixed_s + (epochs - plain) * self.epoch_s + plain * self.plain_epoch_s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def probe_from_clock(model: str, settings: dict, parts: list[dict], close_mosaic: int) -> Probe:
    """The probe's times from the one clock part of its training (see module doc)."""
    if len(parts) != 1 or len(parts[0]["epoch_ends"]) != PROBE_EPOCHS:
        raise InputError(f"{model}: the probe's clock holds {len(parts)} part(s) and not {PROBE_EPOCHS} epochs: "
                         "delete its probe folder and run again")
    part = parts[0]
    ends = part["epoch_ends"]
    epochs = [b - a for a, b in zip([0.0, *ends], ends, strict=False)]
    switch = PROBE_EPOCHS - PROBE_PLAIN  # the first epoch without mosaic
    mosaic = statistics.median(epochs[1:switch])
    plain = statistics.median(epochs[switch + 1:PROBE_EPOCHS - 1])
    fixed = max(0.0, part["seconds"] - switch * mosaic - PROBE_PLAIN * plain)
    return Probe(model=model, settings=settings, cpu=part["cpu"], threads=part["threads"],
                 precision=part.get("precision"), epoch_s=mosaic, plain_epoch_s=plain, fixed_s=fixed,
                 total_s=part["seconds"], close_mosaic=close_mosaic, epoch_ends=ends)


def plan_epochs(probe: Probe, minutes: float, max_epochs: int) -> int:
    """The epochs (1 to max_epochs) whose predicted training time is nearest to `minutes`."""
    target, best = minutes * 60, 1
    for epochs in range(2, max_epochs + 1):
        if abs(probe.predict_s(epochs) - target) < abs(probe.predict_s(best) - target):
            best = epochs
        elif probe.predict_s(epochs) > target:
            break
    return best


def probe_settings(model: str, cfg: ShowdownConfig, threads: int) -> dict:
    """What a probe's times depend on: data, splits, size, batch, loaders, device, threads, our recipe."""
    return {**cfg.settings(), "minutes": None, "workers": cfg.workers, "device": cfg.device, "threads": threads,
            "clock": cfg.clock,
            "recipe": cfg.our_recipe() if is_ours(model) else "ultralytics defaults"}


def probe_path(run: Path, model: str) -> Path:
    """Where the probe of `model` on the data set of `run` is kept."""
    return run / "probe" / f"{model}.json"


def load_probe(path: Path, settings: dict) -> Probe | None:
    """The saved probe, when it exists and was measured with `settings` (else None: measure again)."""
    if not path.is_file():
        return None
    probe = Probe(**json.loads(path.read_text()))
    if probe.settings != settings:
        logger.info("showdown: %s was measured with other settings: probing again", path)
        return None
    if probe.cpu != cpu_info().describe():
        logger.warning("showdown: %s was measured on %s, this is %s: kept (the epochs stay those planned there); "
                       "the report flags training times from another CPU", path, probe.cpu, cpu_info().describe())
    return probe


def get_probe(model: str, cfg: ShowdownConfig, run: Path, threads: int, seed: int, measure) -> Probe:
    """The probe of `model` on this data set: the saved one, else measured now by `measure(folder, seed)` (which
    trains the probe into a fresh `folder` and returns (clock parts, real run's close-mosaic epochs))."""
    settings = probe_settings(model, cfg, threads)
    path = probe_path(run, model)
    probe = load_probe(path, settings)
    if probe is not None:
        return probe
    folder = run / "probe" / model
    if folder.exists():  # a probe cut off: measured again from the start, never resumed
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    parts, close_mosaic = measure(folder, seed)
    probe = probe_from_clock(model, settings, parts, close_mosaic)
    path.write_text(json.dumps(probe.to_dict(), indent=2) + "\n")
    logger.info("showdown: probe %s: %.1f s per epoch (%.1f without mosaic), %.1f s fixed, on %s", model,
                probe.epoch_s, probe.plain_epoch_s, probe.fixed_s, probe.cpu)
    return probe


def time_plan(probe: Probe, minutes: float, max_epochs: int) -> dict:
    """A row's record of its plan: the minutes, the epochs planned, the time predicted, and the probe."""
    epochs = plan_epochs(probe, minutes, max_epochs)
    return {"minutes": minutes, "epochs": epochs, "predicted_s": probe.predict_s(epochs), "capped": (
        epochs == max_epochs and probe.predict_s(epochs) < minutes * 60 * (1 - TOLERANCE)), "probe": probe.to_dict()}
