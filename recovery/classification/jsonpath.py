"""A small JSON path for rule conditions: ``$``, ``.name``, ``['name']`` / ``["name"]`` and
``[index]`` (negative counts from the end), e.g. ``$.order.items[0].sku``. No wildcards or
filters: a condition names one value, so "does it match" has one answer."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MAX_PATH = 500
MAX_STEPS = 32
MISSING = object()  # what a path names in a document that does not have it

_STEP = re.compile(r"""\.([^.\[\]'"\s]+)|\[(-?\d{1,9})\]|\['([^']*)'\]|\["([^"]*)"\]""")

Step = str | int


@lru_cache(maxsize=512)
def parse_path(path: str) -> tuple[Step, ...]:
    """The steps of ``path``; ValueError saying where it is malformed."""
    if len(path) > MAX_PATH:
        raise ValueError(f"the path is longer than {MAX_PATH} characters")
    if not path.startswith("$"):
        raise ValueError("a path starts with $, e.g. $.order.id")
    steps: list[Step] = []
    position = 1
    while position < len(path):
        match = _STEP.match(path, position)
        if match is None:
            raise ValueError(f"cannot read the path at character {position + 1}: {path[position : position + 20]!r}")
        name, index, single, double = match.groups()
        steps.append(int(index) if index is not None else next(s for s in (name, single, double) if s is not None))
        position = match.end()
    if len(steps) > MAX_STEPS:
        raise ValueError(f"the path has more than {MAX_STEPS} steps")
    return tuple(steps)


def resolve(document: Any, steps: tuple[Step, ...]) -> Any:
    """The value the steps name in a parsed JSON document, or MISSING."""
    value = document
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or not -len(value) <= step < len(value):
                return MISSING
        elif not isinstance(value, dict) or step not in value:
            return MISSING
        value = value[step]
    return value
