"""What a cluster job reads: the image files that a folder, a glob, a text file of paths or URIs, a URI folder or one
image names, minus those already done; Ray Data then reads them as (bytes, path) rows."""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pa_fs

from yolonas.errors import InputError
from yolonas.infer.sources import IMAGE_SUFFIXES  # the suffixes plain predict takes as images
from yolonas.scale.rows import path_key

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt",)  # a text file of paths or URIs, one a line


@dataclass
class InputPlan:
    """The files a job runs (`paths`), those it cannot (`missing`: listed but absent), and what it leaves out."""

    paths: list[str]
    missing: list[str] = field(default_factory=list)
    already_done: int = 0
    not_images: int = 0


def _is_image(path: str) -> bool:
    return Path(path.split("?", 1)[0]).suffix.lower() in IMAGE_SUFFIXES


def _list_uri(uri: str) -> list[str]:
    """The files under a URI (s3://, gs://, file://...), recursively, as URIs; or the URI itself when it is a file."""
    try:
        fs, root = pa_fs.FileSystem.from_uri(uri)
        info = fs.get_file_info(root)
        if info.type == pa_fs.FileType.File:
            return [uri]
        if info.type != pa_fs.FileType.Directory:
            raise InputError(f"{uri}: no such file or folder")
        infos = fs.get_file_info(pa_fs.FileSelector(root, recursive=True))
    except (OSError, ValueError, TypeError) as e:  # pyarrow: unknown scheme, no credentials, network
        raise InputError(f"{uri}: cannot list it ({e})") from None
    scheme = uri.split("://", 1)[0]
    return [f"{scheme}://{i.path}" for i in infos if i.type == pa_fs.FileType.File]


def _read_list(path: Path) -> list[str]:
    """The lines of a text file of paths or URIs; relative paths are relative to the file's folder."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line if "://" in line else str((path.parent / line).resolve()) for line in lines if line]


def list_source(source: str | Path) -> tuple[list[str], int]:
    """(files, files left out for their suffix) of a folder (recursively), a glob, a URI, a text file of paths or
    URIs (taken as they are), or one image. Local paths come back absolute, so a resumed job finds them again."""
    text = str(source)
    if "://" in text:
        files = _list_uri(text)
    elif Path(text).is_dir():
        files = [str(p.resolve()) for p in Path(text).rglob("*") if p.is_file() and not p.name.startswith(".")]
    elif Path(text).is_file():
        if Path(text).suffix.lower() in LIST_SUFFIXES:
            return _read_list(Path(text)), 0
        return [str(Path(text).resolve())], 0
    elif any(c in text for c in "*?["):
        files = [str(Path(p).resolve()) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
    else:
        raise InputError(f"{source}: no such file, folder or list of files")
    images = [f for f in files if _is_image(f)]
    if not images:
        raise InputError(f"{source}: no image files here (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return sorted(images), len(files) - len(images)


def plan_inputs(source: str | Path, done: set[str] | None = None) -> InputPlan:
    """The files of `source` still to run: each once, none in `done` (path keys), local ones that exist."""
    files, not_images = list_source(source)
    if not_images:
        log.warning("%s: %d files left out that are not images by their suffix", source, not_images)
    done = done or set()
    unique = list(dict.fromkeys(files))  # a list file may name an image twice: one row each
    todo = [f for f in unique if path_key(f) not in done]
    # A missing local file would fail Ray's whole read; found here, it becomes an error row instead.
    missing = [f for f in todo if "://" not in f and not Path(f).is_file()]
    absent = set(missing)
    return InputPlan(paths=[f for f in todo if f not in absent], missing=missing,
                     already_done=len(unique) - len(todo), not_images=not_images)
