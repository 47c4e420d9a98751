"""The training-time part of a data set's report: how each family trained (recipe, precision), a line per run with
its probe, planned and real training time, parts and CPU, and the warnings that keep a time comparison honest
(off --minutes by more than 10%, capped by --epochs, trained on another CPU or across CPUs), plus what INT8 did.

Rows trained on another CPU than the data set's reference (the CPU its probes ran on, else the one most of its rows
trained on), or in parts on several CPUs, keep their accuracy in the table but are left out of the time comparison
(the mean training time and AP per training hour), and the report names them.
"""

from __future__ import annotations

from collections import Counter

from yolonas.showdown.probe import TOLERANCE
from yolonas.showdown.rows import ShowdownRow

# AP kept by an INT8 model under which the report calls it a collapse.
COLLAPSE = 0.5
ISSUE_23987 = "reported for YOLO26's OpenVINO INT8 in ultralytics issue #23987"


def reference_cpu(rows: list[ShowdownRow]) -> str | None:
    """The CPU a data set's training times compare on: its probes' (where the epochs were planned), else the one
    most of its rows trained on; None when no row says."""
    probes = [r.time_plan["probe"]["cpu"] for r in rows if r.ok and r.time_plan]
    cpus = probes or [r.train_cpu for r in rows if r.ok and r.train_cpu]
    return Counter(cpus).most_common(1)[0][0] if cpus else None


def mark_comparable(rows: list[ShowdownRow]) -> str | None:
    """Set each row's time_comparable (None where its CPU is unknown, as in older rows); the reference CPU."""
    ref = reference_cpu(rows)
    for r in rows:
        r.time_comparable = None if r.train_cpu is None or ref is None else r.train_cpu == ref
    return ref


def off_minutes(r: ShowdownRow) -> float | None:
    """How far a row's training time is from its --minutes, as a fraction (+0.05: 5% longer); None without."""
    if not r.time_plan or not r.train_s:
        return None
    return r.train_s / (60 * r.time_plan["minutes"]) - 1


def _f(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _time_line(r: ShowdownRow) -> str:
    probe = (r.time_plan or {}).get("probe") or {}
    planned = (r.time_plan or {}).get("predicted_s")
    parts = len(r.train_parts or []) or "-"
    return (f"| {r.model} | {r.seed} | {r.epochs} | {r.recipe or '-'} | {r.precision or '-'} | "
            f"{_f(probe.get('epoch_s'), '.1f')} / {_f(probe.get('plain_epoch_s'), '.1f')} | "
            f"{_f(probe.get('fixed_s'), '.0f')} | {_f(planned, '.1f', 1 / 60)} | {_f(r.train_s, '.1f', 1 / 60)} | "
            f"{_f(off_minutes(r), '+.1f', 100)} | {parts} | {r.train_threads or '-'} | {r.train_cpu or '-'} |")


def time_table(rows: list[ShowdownRow]) -> str:
    """A line per finished run: epochs, recipe and precision, its probe, planned and real minutes, parts, CPU."""
    ok = [r for r in rows if r.ok]
    if not ok:
        return ""
    head = ("| model | seed | epochs | recipe | precision | probe s/epoch (mosaic / plain) | probe fixed s | "
            "planned min | trained min | vs --minutes (%) | parts | threads | CPU |\n" + "|---" * 13 + "|\n")
    return "Training time, per run:\n\n" + head + "\n".join(_time_line(r) for r in ok) + "\n"


def _off_warning(rows: list[ShowdownRow]) -> list[str]:
    off = [(r, x) for r in rows if r.ok and (x := off_minutes(r)) is not None and abs(x) > TOLERANCE]
    if not off:
        return []
    return [f"WARNING: training time off --minutes by more than {TOLERANCE:.0%}: " + ", ".join(
        f"{r.model} seed {r.seed} {r.train_s / 60:.1f} min ({100 * x:+.1f}%)" for r, x in off) + "."]


def _capped_warning(rows: list[ShowdownRow]) -> list[str]:
    capped = sorted({r.model for r in rows if r.ok and r.time_plan and r.time_plan.get("capped")})
    if not capped:
        return []
    return [f"WARNING: --epochs capped {', '.join(capped)} below --minutes: raise --epochs to fill the time."]


def _cpu_warnings(rows: list[ShowdownRow], ref: str | None) -> list[str]:
    ok = [r for r in rows if r.ok]
    notes = []
    mixed = [r for r in ok if r.train_cpu and r.train_cpu.startswith("mixed: ")]
    if mixed:
        notes.append("WARNING: trained in parts on different CPUs, left out of the time comparison: " + ", ".join(
            f"{r.model} seed {r.seed} ({r.train_cpu})" for r in mixed) + ".")
    other = [r for r in ok if r.time_comparable is False and r not in mixed]
    if other:
        notes.append(f"WARNING: trained on another CPU than {ref} (the reference: where the probes ran, else most "
                     "rows), left out of the time comparison (their accuracy stays): " + ", ".join(
                         f"{r.model} seed {r.seed} on {r.train_cpu}" for r in other) + ".")
    probes = {r.time_plan["probe"]["cpu"] for r in ok if r.time_plan}
    if len(probes) > 1:
        notes.append(f"WARNING: the probes ran on different CPUs ({'; '.join(sorted(probes))}): the epochs of "
                     "the models were planned on different machines.")
    return notes


def _parts_note(rows: list[ShowdownRow]) -> list[str]:
    resumed = [r for r in rows if r.ok and len(r.train_parts or []) > 1]
    if not resumed:
        return []
    return ["Resumed runs (training time is the sum of the parts, each from its start to its last saved epoch; an "
            "epoch cut off before its checkpoint is trained again and not counted): " + ", ".join(
                f"{r.model} seed {r.seed} in {len(r.train_parts)} parts" for r in resumed) + "."]


def how_trained(rows: list[ShowdownRow]) -> str:
    """'YOLO-NAS: cpu_s320, bf16 autocast; YOLOv8: Ultralytics defaults, fp32', from the ok rows."""
    by_family: dict[str, set] = {}
    for r in rows:
        if r.ok:
            by_family.setdefault(r.family, set()).add(f"{r.recipe or '?'}, {r.precision or '?'}")
    return "; ".join(f"{fam}: {' | '.join(sorted(how))}" for fam, how in by_family.items())


def training_notes(rows: list[ShowdownRow], ref: str | None) -> list[str]:
    """How each family trained, the plan's rule, and the training-time warnings (rows after mark_comparable)."""
    notes = []
    if how := how_trained(rows):
        notes.append(f"How each family trained (its own framework's way on this hardware): {how}.")
    if any(r.ok and r.time_plan for r in rows):
        notes.append(f"Equal training time: each model's epochs are those whose predicted time, from a probe of its "
                     f"own (showdown/probe.py), is nearest to --minutes, with a full schedule for those epochs; the "
                     f"training time is measured (from set-up to the trainer's end, its own final validation "
                     f"included) and flagged beyond {TOLERANCE:.0%}. Reference CPU: {ref or 'unknown'}.")
    return [*notes, *_off_warning(rows), *_capped_warning(rows), *_cpu_warnings(rows, ref), *_parts_note(rows)]


def int8_notes(models: list[ShowdownRow]) -> list[str]:
    """What each family's own INT8 gave, as measured: a collapse (INT8 keeps under half the fp32 AP), a failure."""
    notes = []
    for m in models:
        if m.ok and m.int8_error:
            notes.append(f"INT8 failed for {m.model}: {m.int8_error} (its fp32 results stand).")
        if m.ok and m.AP and m.AP_int8 is not None and m.AP_int8 < COLLAPSE * m.AP:
            seen = f"; {ISSUE_23987}" if m.family == "YOLO26" else ""
            notes.append(f"INT8 collapse, as measured: {m.model}'s own OpenVINO INT8 scores {100 * m.AP_int8:.1f} "
                         f"mAP against {100 * m.AP:.1f} in fp32{seen}.")
    return notes
