"""What the letter page shows of a body (invariant 10): masked first (recovery.masking), then
pretty JSON, text, or a ``hexdump -C`` view of binary bytes, each cut to a display limit; the page
links to the whole body. Nothing here raises on hostile bytes, and the template escapes all of it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from recovery.masking import WITHHELD, Masker
from recovery.models import DeadLetter

TEXT_LIMIT = 64 * 1024  # characters of JSON or text shown
HEX_LIMIT = 4 * 1024  # bytes shown in the hex view


@dataclass(frozen=True)
class BodyDisplay:
    kind: str  # "json", "text", "binary", "withheld" or "empty"
    text: str
    truncated: bool
    size: int  # the stored size of the whole body, in bytes
    masked: bool  # masks were applied for this viewer


def body_display(letter: DeadLetter, masker: Masker) -> BodyDisplay:
    data = bytes(letter.body or b"")
    parts = masker.body_parts(data, limit=TEXT_LIMIT)
    kind, text, truncated = parts.kind, "", parts.truncated
    if parts.kind == "json":
        try:
            pretty = json.dumps(parts.value, indent=2, ensure_ascii=False)
        except (RecursionError, ValueError):  # nesting the parser took but the printer cannot
            if masker.active:
                kind, text = "withheld", WITHHELD
            else:
                kind, text, truncated = "text", data[:TEXT_LIMIT].decode("utf-8", "replace"), len(data) > TEXT_LIMIT
        else:
            text, truncated = pretty[:TEXT_LIMIT], len(pretty) > TEXT_LIMIT
    elif parts.kind == "text":
        text = parts.value
    elif parts.kind == "binary":
        text, truncated = hexdump(parts.value[:HEX_LIMIT]), len(data) > HEX_LIMIT
    elif parts.kind == "withheld":
        text = WITHHELD
    return BodyDisplay(kind=kind, text=text, truncated=truncated, size=letter.body_size, masked=masker.active)


def hexdump(data: bytes) -> str:
    """``hexdump -C``: offset, sixteen bytes in hex (two groups of eight), the printable ASCII."""
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        left = " ".join(f"{byte:02x}" for byte in chunk[:8])
        right = " ".join(f"{byte:02x}" for byte in chunk[8:])
        text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{offset:08x}  {left:<23}  {right:<23}  |{text}|")
    lines.append(f"{len(data):08x}")
    return "\n".join(lines)
