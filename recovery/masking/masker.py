"""The Masker: one DLQ's masks for one viewer, over text, JSON, headers and bodies. See the
package docstring (recovery.masking) for what a masked value still gives away."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from recovery.masking.detectors import MASK, luhn, spans
from recovery.masking.paths import MAX_PATHS, JsonPathError, Step, parse_json_path

if TYPE_CHECKING:
    from recovery.models import DeadLetterQueue

logger = logging.getLogger(__name__)

WITHHELD = "[masked: this body is too deeply nested to locate its masked fields]"
MAX_DEPTH = 128
# Characters masked past a display limit, so a value cut by the limit is still recognised whole.
_MARGIN = 512
_MAX_BASE64 = 1_400_000  # base64 header values decoded at most (~1 MiB); longer ones are masked whole


@dataclass(frozen=True)
class MaskedBody:
    """A body after masking, with what it turned out to be."""

    kind: str  # "json", "text", "binary", "withheld" or "empty"
    value: Any  # json: the document; text: str; binary: bytes; withheld/empty: ""
    truncated: bool = False  # text/binary cut at the limit asked for

    def to_bytes(self) -> bytes:
        if self.kind == "json":
            return json.dumps(self.value, ensure_ascii=False).encode("utf-8")
        if self.kind == "binary":
            return self.value
        if self.kind == "withheld":
            return WITHHELD.encode("utf-8")
        return str(self.value).encode("utf-8")


class Masker:
    """Masks one DLQ's letters for one viewer. With ``unmasked=True`` (the viewer holds the unmask
    grant) every method returns its input unchanged."""

    def __init__(
        self,
        *,
        json_paths: Iterable[str] = (),
        headers: Iterable[str] = (),
        emails: bool = True,
        cards: bool = True,
        unmasked: bool = False,
    ) -> None:
        self.unmasked = unmasked
        self.emails = emails
        self.cards = cards
        self.header_names = frozenset(str(name).strip().lower() for name in headers if str(name).strip())
        self.paths: list[tuple[Step, ...]] = []
        for path in list(json_paths)[:MAX_PATHS]:
            try:
                self.paths.append(parse_json_path(path))
            except JsonPathError as exc:  # dlq_save refuses these; a row written another way is logged
                logger.warning("mask path ignored: %s", exc)

    @classmethod
    def from_dlq(cls, dlq: DeadLetterQueue, *, unmasked: bool) -> Masker:
        return cls(
            json_paths=dlq.mask_json_paths or (),
            headers=dlq.mask_headers or (),
            emails=dlq.mask_emails,
            cards=dlq.mask_card_numbers,
            unmasked=unmasked,
        )

    @property
    def active(self) -> bool:
        """Whether this masker may change anything (the viewer is masked and a mask is set)."""
        return not self.unmasked and bool(self.emails or self.cards or self.paths or self.header_names)

    # text ---------------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        if not self.active or not value:
            return value
        return self._text(str(value))

    def _text(self, value: str, cut: int | None = None) -> str:
        """The detectors over ``value``; with ``cut``, only what starts before it is kept (a value
        that straddles the cut is replaced whole)."""
        pieces, position = [], 0
        for start, end, replacement in spans(value, emails=self.emails, cards=self.cards):
            if cut is not None and start >= cut:
                break
            pieces += [value[position:start], replacement]
            position = end
        if cut is None:
            pieces.append(value[position:])
        elif position < cut:
            pieces.append(value[position:cut])
        return "".join(pieces)

    def _bytes(self, data: bytes, cut: int | None = None) -> bytes:
        """The detectors over bytes that are not UTF-8: Latin-1 maps each byte to one character,
        so spans found in the decoded text are byte offsets."""
        text = data.decode("latin-1")
        pieces, position = [], 0
        for start, end, replacement in spans(text, emails=self.emails, cards=self.cards):
            if cut is not None and start >= cut:
                break
            pieces.append(data[position:start])
            pieces.append(replacement.encode("utf-8"))
            position = end
        if cut is None:
            pieces.append(data[position:])
        elif position < cut:
            pieces.append(data[position:cut])
        return b"".join(pieces)

    # structures ---------------------------------------------------------------------------------

    def json(self, value: Any) -> Any:
        """A masked copy of a JSON document (the input is never changed)."""
        if not self.active:
            return value
        if any(not path for path in self.paths):
            return MASK  # "$": the whole document
        states = tuple((index, 0) for index in range(len(self.paths)))
        return self._walk(value, states, names=frozenset(), depth=0)

    def headers(self, value: Any) -> Any:
        """A masked copy of headers (or properties, or failure extras)."""
        if not self.active:
            return value
        return self._walk(value, (), names=self.header_names, depth=0)

    def _walk(self, node: Any, states: tuple[tuple[int, int], ...], *, names: frozenset[str], depth: int) -> Any:
        if isinstance(node, str):
            return self._text(node) if node else node
        if isinstance(node, bool) or node is None or isinstance(node, float):
            return node
        if isinstance(node, int):
            return self._number(node)
        if depth >= MAX_DEPTH:
            return MASK
        if isinstance(node, dict):
            if set(node) == {"$base64"}:
                return {"$base64": self._base64(node["$base64"])}
            out: dict[str, Any] = {}
            for key, child in node.items():
                child_states, hit = self._advance(states, key=key, index=None)
                masked_key = self._text(key) if isinstance(key, str) else str(key)
                masked_key = _unique(masked_key, out)
                if hit or (isinstance(key, str) and key.lower() in names):
                    out[masked_key] = MASK
                else:
                    out[masked_key] = self._walk(child, child_states, names=names, depth=depth + 1)
            return out
        if isinstance(node, list | tuple):
            items = []
            for position, child in enumerate(node):
                child_states, hit = self._advance(states, key=None, index=(position, len(node)))
                items.append(MASK if hit else self._walk(child, child_states, names=names, depth=depth + 1))
            return items
        return self._text(str(node))

    def _advance(
        self, states: tuple[tuple[int, int], ...], *, key: Any, index: tuple[int, int] | None
    ) -> tuple[tuple[tuple[int, int], ...], bool]:
        """The path states after stepping into one child, and whether a path ends on it."""
        if not states:
            return states, False
        following: list[tuple[int, int]] = []
        hit = False
        for path_index, step_index in states:
            path = self.paths[path_index]
            kind, arg = path[step_index]
            if kind == "deep":
                following.append((path_index, step_index))
                matched = key == arg
            elif kind == "key":
                matched = key == arg
            elif kind == "index":
                matched = index is not None and index[0] == (arg if arg >= 0 else index[1] + arg)
            else:  # any
                matched = True
            if matched:
                if step_index + 1 == len(path):
                    hit = True
                else:
                    following.append((path_index, step_index + 1))
        return tuple(dict.fromkeys(following)), hit

    def _number(self, number: int) -> Any:
        digits = str(abs(number))
        if self.cards and 13 <= len(digits) <= 19 and luhn(digits):
            return MASK + digits[-4:]
        return number

    def _base64(self, encoded: Any) -> Any:
        """A non-UTF-8 header value as captured ({"$base64": ...}): masked as bytes."""
        if not isinstance(encoded, str) or len(encoded) > _MAX_BASE64:
            return MASK
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return MASK
        masked = self._bytes(raw)
        return encoded if masked == raw else base64.b64encode(masked).decode("ascii")

    # bodies -------------------------------------------------------------------------------------

    def body(self, data: bytes) -> bytes:
        """A whole body as the viewer may take it away."""
        if not self.active:
            return data
        return self.body_parts(data).to_bytes()

    def body_parts(self, data: bytes, limit: int | None = None) -> MaskedBody:
        """The body masked and classified: a JSON object or list, UTF-8 text, or other bytes.
        JSON is masked whole; text and binary are masked (and kept) up to ``limit``."""
        data = bytes(data or b"")
        if not data:
            return MaskedBody("empty", "")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            cut = limit if limit is not None and len(data) > limit else None
            head = data if cut is None else data[: cut + _MARGIN]
            masked = self._bytes(head, cut) if self.active else head[:cut]
            return MaskedBody("binary", masked, truncated=cut is not None)
        if text.lstrip()[:1] in ("{", "["):
            try:
                document = json.loads(text)
            except RecursionError:
                if self.active and self.paths:
                    return MaskedBody("withheld", "")
            except ValueError:
                pass
            else:
                return MaskedBody("json", self.json(document))
        cut = limit if limit is not None and len(text) > limit else None
        head = text if cut is None else text[: cut + _MARGIN]
        return MaskedBody("text", self._text(head, cut) if self.active else head[:cut], truncated=cut is not None)

    def body_text(self, data: bytes, limit: int) -> str:
        """At most ``limit`` characters of the masked body as text, for lists and excerpts."""
        parts = self.body_parts(data, limit)
        if parts.kind == "json":
            return json.dumps(parts.value, ensure_ascii=False)[:limit]
        if parts.kind == "binary":
            return parts.value.decode("utf-8", "replace")[:limit]
        if parts.kind == "withheld":
            return WITHHELD
        return parts.value


def _unique(key: str, taken: dict[str, Any]) -> str:
    if key not in taken:
        return key
    suffix = 2
    while f"{key} ({suffix})" in taken:
        suffix += 1
    return f"{key} ({suffix})"
