"""Fingerprints: one stable hash per kind of failure, so that the same failure on a thousand
different orders is one group (DESIGN "fingerprint"). Pure functions: no models, no I/O.

The hash covers the error class, the error message with its variable parts replaced by
placeholders (``strip_message``), the origin, and the three innermost stack frames with line
numbers, columns and addresses dropped (``top_frames``). Whatever varies between two
deliveries of the same failure (ids, amounts, times, file paths of a release) must not reach
the hash; whatever tells two failures apart (the class, the words of the message, where it was
thrown, where the message came from) must.

Every input is bounded before a regular expression sees it (invariant 10).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from typing import NamedTuple

MAX_MESSAGE = 4000  # DeadLetter.error_message's own limit (recovery.metadata)
MAX_STACK = 50_000
FRAMES = 3

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
# One pass per shape, each run only when the text can hold it (a message without "@" never pays
# for the e-mail pattern). Order matters: a timestamp holds numbers, a quoted value may hold
# anything; placeholders hold no digit, quote or "@", so later passes leave them alone.
# ISO 8601 dates and times, and bare clock times ("12:30:45.123"); both start with a digit.
_ISO_TIME = re.compile(
    r"\d(?:\d{3}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:\s?(?:Z|UTC|[+-]\d{2}:?\d{2}))?)?"
    r"|\d?:\d{2}:\d{2}(?:[.,]\d{1,9})?)"
)
# RFC 1123/2822 ("Tue, 14 Nov 2023 08:12:31 GMT") and ctime/Java Date ("Thu Nov 16 10:00:00 UTC 2023").
_RFC_TIME = re.compile(
    rf"(?:{_DAY},?\s+)?\d{{1,2}}\s+{_MONTH}\s+\d{{4}}\s+\d{{2}}:\d{{2}}(?::\d{{2}})?(?:\s+(?:GMT|UTC|[+-]\d{{4}}))?"
    rf"|{_DAY}\s+{_MONTH}\s+\d{{1,2}}\s+\d{{2}}:\d{{2}}:\d{{2}}(?:\s+[A-Z]{{3,4}})?\s+\d{{4}}"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+")
# A quote opens only after a non-word character, so the apostrophe of "can't" never opens one.
_QUOTED = re.compile(r"""(?<!\w)'[^'\r\n]{0,256}'(?!\w)|(?<!\w)"[^"\r\n]{0,256}"(?!\w)|`[^`\r\n]{0,256}`""")
# Hex ids: 0x..., or 8+ hex digits holding a digit and a letter; the word boundaries are checked
# in _hex (a leading \b would cost a test at every position).
_HEX = re.compile(r"0[xX][0-9a-fA-F]+|[0-9a-fA-F]{8,}")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_DIGITS = frozenset("0123456789")


def _hex(match: re.Match[str]) -> str:
    text, start, end = match.string, match.start(), match.end()
    token = match.group()
    if (start and (text[start - 1].isalnum() or text[start - 1] == "_")) or (
        end < len(text) and (text[end].isalnum() or text[end] == "_")
    ):
        return token
    if token[:2] in ("0x", "0X") or (not token.isdigit() and not token.isalpha()):
        return "<hex>"
    return token


class Fingerprint(NamedTuple):
    digest: str  # sha256 hex, FingerprintGroup.fingerprint
    pattern: str  # the stripped message, FingerprintGroup.message_pattern


def strip_message(message: str) -> str:
    """The error message with numbers, UUIDs, hex ids, quoted values, e-mail addresses and
    ISO/RFC timestamps replaced by placeholders, whitespace collapsed."""
    text = message[:MAX_MESSAGE]
    digits = not _DIGITS.isdisjoint(text)
    if digits:
        if any(month in text for month in _MONTHS):
            text = _RFC_TIME.sub("<time>", text)
        text = _ISO_TIME.sub("<time>", text)
        if "-" in text:
            text = _UUID.sub("<uuid>", text)
    if "@" in text:
        text = _EMAIL.sub("<email>", text)
    if "'" in text or '"' in text or "`" in text:
        text = _QUOTED.sub("<value>", text)
    if digits:
        text = _HEX.sub(_hex, text)
        text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())


# Java and .NET ("at pkg.Class.method(File.java:42)", "at NS.Class.Method(Args) in f.cs:line 42"),
# Node ("at fn (/app/x.js:10:5)"); innermost first.
_AT_FRAME = re.compile(r"^[ \t]*at[ \t]+(\S[^\r\n]{0,500})", re.M)
# Python ('File "/app/x.py", line 42, in handle'); innermost last.
_PY_FRAME = re.compile(r'^[ \t]*File "([^"\r\n]{1,500})", line \d+, in ([^\r\n]{1,200})', re.M)
_FRAME_NOISE = (
    (re.compile(r"\s+in\s+\S.*?:line\s+\d+\s*$"), ""),  # .NET " in /src/Handler.cs:line 42"
    (re.compile(r"\((?:[^()]*?)(?::\d+)+\)\s*$"), ""),  # "(Handler.java:42)", "(/app/x.js:10:5)"
    (re.compile(r"\((?:Native Method|Unknown Source|<generated>)\)\s*$"), ""),
    (re.compile(r"^[\w.$@-]*/+(?=[\w$])"), ""),  # JDK 9+ module prefix "java.base/", "app//"
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<addr>"),
    (re.compile(r"\$\$[\w$]*"), "$$"),  # CGLIB / Hibernate proxies "$$EnhancerBySpringCGLIB$$a1b2"
    (re.compile(r"\d+"), "<n>"),  # lambda$handle$0, <Handle>d__5, generated names
)


def _clean_frame(frame: str) -> str:
    for pattern, replacement in _FRAME_NOISE:
        frame = pattern.sub(replacement, frame)
    return " ".join(frame.split())


def _py_path(path: str) -> str:
    """The last two components of a Python file path: the package layout, not the install root."""
    parts = path.replace("\\", "/").rsplit("/", 2)
    return "/".join(parts[-2:])


def top_frames(stack_trace: str, count: int = FRAMES) -> list[str]:
    """The ``count`` innermost frames, normalised: Java/.NET/Node frames are the first "at"
    lines (without the "(File.java:42)" / "in file:line 42" part); Python frames are the last
    'File ..., line N, in f' lines, as "package/module.py:f"."""
    stack = stack_trace[:MAX_STACK]
    if 'File "' in stack:
        python: deque[str] = deque(maxlen=count)
        for match in _PY_FRAME.finditer(stack):
            python.append(f"{_py_path(match.group(1))}:{match.group(2).strip()}")
        if python:
            return list(reversed(python))
    frames = []
    for match in _AT_FRAME.finditer(stack):
        frame = _clean_frame(match.group(1))
        if frame:
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


def fingerprint(*, error_class: str, error_message: str, origin: str, stack_trace: str = "") -> Fingerprint:
    """The fingerprint of a normalised failure (see the module docstring)."""
    pattern = strip_message(error_message)
    parts = [error_class.strip(), pattern, origin.strip(), *top_frames(stack_trace)]
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return Fingerprint(digest, pattern[:MAX_MESSAGE])
