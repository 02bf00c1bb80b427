"""What rules look at: one dead letter's facts, read lazily and at most once.

A letter is checked against every rule until one matches, so the expensive readings (decoding
the body, parsing it as JSON, folding header names) are done on first use and kept. Every
reading survives hostile input (invariant 10): a body that is not UTF-8, JSON nested 10,000
deep (RecursionError) or otherwise malformed reads as "not JSON", never as an error.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

NOT_JSON = object()  # the parsed body of a letter whose body is not valid JSON
_UNREAD = object()
_JSON_START = frozenset(b'{["-0123456789tfn \t\r\n')
MAX_VALUE_TEXT = 64 * 1024
MAX_BASE64 = 88_000  # base64 characters of a binary header decoded at most (~64 KiB)
SEARCH_BODY_BYTES = 4096


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python accepts them, JSON does not


def value_text(value: Any) -> str | None:
    """A header or property value as text for comparison: containers the adapters produce are
    unwrapped (a repeated Kafka header: its last value; an SQS attribute: its StringValue or
    BinaryValue; non-UTF-8 bytes: decoded with replacement characters). None when absent."""
    for _ in range(3):
        if isinstance(value, list) and value:
            value = value[-1]
        elif isinstance(value, dict) and "DataType" in value:
            value = value.get("StringValue", value.get("BinaryValue"))
        elif isinstance(value, dict) and "$base64" in value and isinstance(value["$base64"], str):
            try:
                raw = base64.b64decode(value["$base64"][:MAX_BASE64])
            except (binascii.Error, ValueError):
                return None
            return raw.decode("utf-8", "replace")
        else:
            break
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)[:MAX_VALUE_TEXT]
    except (ValueError, TypeError, RecursionError):
        return None


@dataclass(slots=True)
class LetterFacts:
    """A dead letter as rules see it (built from a database row or a DeadLetter)."""

    id: int | None = None
    dlq_id: int | None = None
    origin: str = ""
    reason: str = ""
    error_class: str = ""
    error_message: str = ""
    content_type: str = ""
    headers: Any = None
    properties: Any = None
    body: bytes = b""
    attempt_count: int | None = None
    captured_at: datetime | None = None
    first_failed_at: datetime | None = None
    _text: Any = field(default=_UNREAD, repr=False)
    _json: Any = field(default=_UNREAD, repr=False)
    _folded: dict[str, Any] | None = field(default=None, repr=False)
    _lower: dict[str, str] | None = field(default=None, repr=False)

    def lowered(self, name: str) -> str:
        """A text field lower-cased (for case-insensitive patterns), computed once."""
        if self._lower is None:
            self._lower = {}
        value = self._lower.get(name)
        if value is None:
            value = self._lower[name] = (getattr(self, name) or "").lower()
        return value

    def text(self) -> str | None:
        """The body decoded as UTF-8, or None when it is not UTF-8."""
        if self._text is _UNREAD:
            body = self.body if isinstance(self.body, bytes) else bytes(self.body or b"")
            try:
                self._text = body.decode("utf-8")
            except UnicodeDecodeError:
                self._text = None
        return self._text

    def json(self) -> Any:
        """The body parsed as JSON, or NOT_JSON (not UTF-8, malformed, too deep)."""
        if self._json is _UNREAD:
            self._json = NOT_JSON
            body = self.body or b""
            text = self.text() if body and body[0] in _JSON_START else None
            if text is not None:
                with contextlib.suppress(ValueError, RecursionError):
                    self._json = json.loads(text, parse_constant=_reject_constant)
        return self._json

    def header(self, name: str) -> Any:
        """A header's raw value, else a property's (SQS attributes, AMQP properties, the Kafka
        record's fields); by exact name, then case-insensitively. None when neither has it."""
        headers = self.headers if isinstance(self.headers, dict) else {}
        properties = self.properties if isinstance(self.properties, dict) else {}
        if name in headers:
            return headers[name]
        if name in properties:
            return properties[name]
        if self._folded is None:
            folded: dict[str, Any] = {}
            for source in (properties, headers):  # headers win: they are written last
                folded.update((k.lower(), v) for k, v in source.items() if isinstance(k, str))
            self._folded = folded
        return self._folded.get(name.lower())


def search_text(facts: LetterFacts) -> str:
    """What the letters search reads: error class, error message and the first 4 KiB of the body
    when it is UTF-8 (a character cut at the 4 KiB edge is dropped), lower-cased, NUL-free."""
    body = bytes(facts.body[:SEARCH_BODY_BYTES]) if facts.body else b""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(body, final=False)
    except UnicodeDecodeError:
        text = ""
    parts = [facts.error_class, facts.error_message, text]
    return "\n".join(p for p in parts if p).lower().replace("\x00", "")
