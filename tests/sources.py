"""The package's modules parsed with `ast`, in a child interpreter.

Why a child: CPython 3.11 keeps one AST-conversion depth counter per interpreter, so `ast.parse` raises
"SystemError: AST constructor recursion depth mismatch" when another thread converts code at the same time
(gh-106905). Threads that earlier tests leave behind (Ray Data's prefetcher and pools) do that.
"""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
from pathlib import Path

_CHILD = """
import ast, pickle, sys
paths = sys.stdin.read().splitlines()
sys.stdout.buffer.write(pickle.dumps([ast.parse(open(p, encoding="utf-8").read(), p) for p in paths]))
"""


def parse_files(paths: list[Path]) -> dict[Path, ast.Module]:
    """Each file's syntax tree, parsed in a fresh interpreter with no other thread."""
    done = subprocess.run([sys.executable, "-c", _CHILD], input="\n".join(map(str, paths)).encode(),
                          capture_output=True, check=True, timeout=120)
    return dict(zip(paths, pickle.loads(done.stdout), strict=True))
