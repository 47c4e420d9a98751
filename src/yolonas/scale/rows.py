"""The output of a cluster job: one row per image (path, size, boxes, scores, class ids and names, error), written
as numbered Parquet or JSONL files in one folder, and read back to know which images are done."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from yolonas.errors import InputError
from yolonas.infer.detections import Detections

log = logging.getLogger(__name__)

FORMATS = ("parquet", "jsonl")
SCHEMA = pa.schema([
    ("path", pa.string()),  # the file as Ray Data names it (an s3://bucket/key URI becomes bucket/key)
    ("width", pa.int32()),  # null when the image could not be read
    ("height", pa.int32()),
    ("boxes", pa.list_(pa.list_(pa.float32(), 4))),  # xyxy in original pixels, best score first
    ("scores", pa.list_(pa.float32())),
    ("class_ids", pa.list_(pa.int32())),
    ("class_names", pa.list_(pa.string())),  # one per box
    ("error", pa.string()),  # null for a detected image; else why it has no detections
])
# JSON has no fixed-size lists: read as plain lists, then cast.
JSON_SCHEMA = SCHEMA.set(SCHEMA.get_field_index("boxes"), pa.field("boxes", pa.list_(pa.list_(pa.float32()))))
PART_PREFIX = "part-"


def result_table(paths: list[str], results: list[Detections | str]) -> pa.Table:
    """One row per image, in order: its Detections, or (a str) the error that kept it from the detector."""
    dets = [r for r in results if isinstance(r, Detections)]
    counts = np.array([len(r) if isinstance(r, Detections) else 0 for r in results], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts, dtype=np.int32)]), pa.int32())
    # Every box of the batch in one array each, cut per image by the offsets: no loop over boxes.
    boxes = np.concatenate([d.boxes for d in dets] + [np.zeros((0, 4), np.float32)]).astype(np.float32)
    scores = np.concatenate([d.scores for d in dets] + [np.zeros(0, np.float32)]).astype(np.float32)
    class_ids = np.concatenate([d.class_ids for d in dets] + [np.zeros(0, np.int64)]).astype(np.int32)
    names = np.concatenate([np.asarray(d.class_names, dtype=object)[d.class_ids] for d in dets]
                           + [np.zeros(0, dtype=object)])
    shapes = [r.image_shape if isinstance(r, Detections) else (None, None) for r in results]
    columns = [
        pa.array(paths, pa.string()),
        pa.array([w for _, w in shapes], pa.int32()),
        pa.array([h for h, _ in shapes], pa.int32()),
        pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(pa.array(boxes.ravel()), 4)),
        pa.ListArray.from_arrays(offsets, pa.array(scores)),
        pa.ListArray.from_arrays(offsets, pa.array(class_ids)),
        pa.ListArray.from_arrays(offsets, pa.array(names, pa.string())),
        pa.array([r if isinstance(r, str) else None for r in results], pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def error_table(paths: list[str], errors: list[str]) -> pa.Table:
    """Rows for images that never reached an actor (a listed file that does not exist, say)."""
    return result_table(paths, list(errors))


def count_errors(table: pa.Table) -> int:
    """How many rows of `table` are errors."""
    return int(pc.sum(pc.is_valid(table["error"])).as_py() or 0)


def check_format(fmt: str) -> None:
    """InputError unless `fmt` is a format a job writes."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: give {' or '.join(FORMATS)}")


def part_files(folder: str | Path, fmt: str) -> list[Path]:
    """The complete output files of a folder, in name order (an interrupted write leaves only a hidden temp file)."""
    folder = Path(folder)
    return sorted(folder.glob(f"{PART_PREFIX}*.{fmt}")) if folder.is_dir() else []


def write_part(table: pa.Table, path: Path, fmt: str) -> None:
    """Write `table` to `path` all at once: first a hidden temp file, then a rename, so a killed job leaves no half
    file behind that a resumed job would trust."""
    tmp = path.with_name(f".{path.name}.tmp")
    if fmt == "parquet":
        pq.write_table(table, tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in table.to_pylist())
    os.replace(tmp, path)


def read_part(path: Path, fmt: str, columns: list[str] | None = None) -> pa.Table:
    """One output file as a table with the job's schema (or only `columns`)."""
    if fmt == "parquet":
        return pq.read_table(path, columns=columns, schema=SCHEMA)
    if path.stat().st_size == 0:
        table = SCHEMA.empty_table()
    else:
        options = pa_json.ParseOptions(explicit_schema=JSON_SCHEMA)
        table = pa_json.read_json(path, parse_options=options).cast(SCHEMA)
    return table.select(columns) if columns else table


def read_rows(folder: str | Path, fmt: str = "parquet") -> pa.Table:
    """Every row a job wrote to `folder` (all its runs), as one table."""
    parts = [read_part(p, fmt) for p in part_files(folder, fmt)]
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()


def path_key(path: str) -> str:
    """The name two spellings of one file share: the path without its URI scheme (Ray Data names s3://b/k b/k)."""
    return path.split("://", 1)[-1]


def done_paths(folder: str | Path, fmt: str) -> set[str]:
    """The `path_key` of every image `folder` already has a row for (detected or failed): what a resumed job skips.

    Only the path column is read, file by file."""
    done: set[str] = set()
    for part in part_files(folder, fmt):
        try:
            column = read_part(part, fmt, ["path"])["path"]
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(f"{part}: cannot read this output file ({e}); move it away and resume again") from None
        done.update(path_key(p) for p in column.to_pylist())
    return done
