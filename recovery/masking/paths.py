"""JSON paths naming body fields to mask (DeadLetterQueue.mask_json_paths): the supported syntax,
parsed once per masker and validated when a DLQ is saved (recovery.brokers.services.dlq_save)."""

from __future__ import annotations

import re
from typing import Any

MAX_PATHS = 100
MAX_PATH_LENGTH = 300


class JsonPathError(ValueError):
    """A mask path that does not follow the supported syntax."""


# A step: ("key", name), ("index", n), ("any", None) or ("deep", name) for ``..name``.
Step = tuple[str, Any]

_NAME = re.compile(r"[^.\[\]\s'\"*]+")


def parse_json_path(path: str) -> tuple[Step, ...]:
    """Parse ``$.a.b``, ``$.items[*].card``, ``$.list[0]``, ``$['odd key']``, ``$.*`` and
    ``$..email`` (any depth) into steps; raise JsonPathError saying where it went wrong."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise JsonPathError(f"{path!r}: a path starts with $")
    if len(path) > MAX_PATH_LENGTH:
        raise JsonPathError(f"{path[:40]!r}...: longer than {MAX_PATH_LENGTH} characters")
    steps: list[Step] = []
    pos = 1
    while pos < len(path):
        if path.startswith("..", pos):
            name, pos = _name_at(path, pos + 2)
            steps.append(("deep", name))
        elif path[pos] == ".":
            if path.startswith("*", pos + 1):
                steps.append(("any", None))
                pos += 2
            else:
                name, pos = _name_at(path, pos + 1)
                steps.append(("key", name))
        elif path[pos] == "[":
            step, pos = _bracket_at(path, pos)
            steps.append(step)
        else:
            raise JsonPathError(f"{path!r}: unexpected {path[pos]!r} at character {pos + 1}")
    return tuple(steps)


def _name_at(path: str, pos: int) -> tuple[str, int]:
    if path.startswith("[", pos):
        step, end = _bracket_at(path, pos)
        if step[0] != "key":
            raise JsonPathError(f"{path!r}: '..' takes a name at character {pos + 1}")
        return step[1], end
    match = _NAME.match(path, pos)
    if not match:
        raise JsonPathError(f"{path!r}: expected a name at character {pos + 1}")
    return match.group(), match.end()


def _bracket_at(path: str, pos: int) -> tuple[Step, int]:
    end = path.find("]", pos)
    inner = path[pos + 1 : end] if end > 0 else ""
    if inner == "*":
        return ("any", None), end + 1
    if re.fullmatch(r"-?[0-9]{1,9}", inner):
        return ("index", int(inner)), end + 1
    quoted = re.compile(r"\[(['\"])((?:\\.|(?!\1).)*)\1\]").match(path, pos)
    if quoted:
        return ("key", re.sub(r"\\(.)", r"\1", quoted.group(2))), quoted.end()
    raise JsonPathError(f"{path!r}: expected [n], [*] or ['name'] at character {pos + 1}")
