"""Pareto fronts of (cost, score) pairs: lower cost and higher score are better. Used by the search and the showdown."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def pareto_front(items: Sequence[T], key: Callable[[T], tuple[float, float]] = lambda p: p) -> list[T]:
    """The items no other item beats on both cost and score (ties kept once), ordered by cost.

    `key(item)` gives (cost, score); by default the items are such pairs themselves."""
    front, best = [], -math.inf
    for item in sorted(items, key=lambda i: (key(i)[0], -key(i)[1])):
        score = key(item)[1]
        if score > best:
            front.append(item)
            best = score
    return front
