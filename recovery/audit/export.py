"""Streamed audit exports (CSV and JSON Lines) with a signed trailer, and their offline check.

A file is: the events (each with its ``prev_hash`` and ``hash``), then one trailer line holding
the filters, the count, a SHA-256 of every byte before the trailer, the signed checkpoint taken
when the export started, and an HMAC of all that. Changing, dropping or adding any byte of the
body breaks the digest; forging the trailer needs AUDIT_HMAC_KEY.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.utils import timezone

from recovery.audit.canonical import (
    EVENT_FIELDS,
    GENESIS_HASH,
    canonical_json,
    checkpoint_signature,
    event_content,
    event_hash,
    format_time,
    key_id,
    sign,
    signatures_match,
)
from recovery.audit.verification import DB_FIELDS, content_from_row
from recovery.models import AuditCheckpoint, AuditEvent

FORMATS = ("jsonl", "csv")
CSV_TRAILER_MARK = "#trailer"


@dataclass(frozen=True)
class AuditFilters:
    since: datetime | None = None
    until: datetime | None = None
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: (format_time(v) if isinstance(v, datetime) else v) for k, v in asdict(self).items() if v}

    def apply(self, events: Any) -> Any:
        if self.since:
            events = events.filter(at__gte=self.since)
        if self.until:
            events = events.filter(at__lt=self.until)
        if self.actor:
            events = events.filter(actor_name=self.actor)
        if self.action:
            events = events.filter(action=self.action)
        if self.object_type:
            events = events.filter(object_type=self.object_type)
        if self.object_id:
            events = events.filter(object_id=self.object_id)
        return events


@dataclass(frozen=True)
class ExportPlan:
    fmt: str
    filters: AuditFilters
    checkpoint: AuditCheckpoint
    exported_at: str = field(default_factory=lambda: format_time(timezone.now()))


def _events(plan: ExportPlan) -> Iterator[tuple[dict[str, Any], str]]:
    events = plan.filters.apply(AuditEvent.objects.filter(seq__lte=plan.checkpoint.seq)).order_by("seq")
    for row in events.values_list(*DB_FIELDS).iterator(chunk_size=2000):
        yield content_from_row(row)


def _csv_line(values: list[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def _csv_cells(content: dict[str, Any], stored_hash: str) -> list[Any]:
    cells = []
    for name in EVENT_FIELDS:
        value = content[name]
        if name in ("before", "after"):
            value = canonical_json(value)
        elif value is None:
            value = ""
        cells.append(value)
    return [*cells, stored_hash]


def export_lines(plan: ExportPlan) -> Iterator[str]:
    """The file, line by line (constant memory: events stream from a server-side cursor)."""
    digest = hashlib.sha256()
    count = 0
    first_seq = last_seq = None
    if plan.fmt == "csv":
        header = _csv_line([*EVENT_FIELDS, "hash"])
        digest.update(header.encode())
        yield header
    for content, stored_hash in _events(plan):
        if plan.fmt == "csv":
            line = _csv_line(_csv_cells(content, stored_hash))
        else:
            line = canonical_json({**content, "hash": stored_hash}) + "\n"
        digest.update(line.encode())
        count += 1
        first_seq = first_seq or content["seq"]
        last_seq = content["seq"]
        yield line
    trailer = _trailer(plan, count=count, first_seq=first_seq, last_seq=last_seq, sha256=digest.hexdigest())
    if plan.fmt == "csv":
        yield _csv_line([CSV_TRAILER_MARK, canonical_json(trailer)])
    else:
        yield canonical_json(trailer) + "\n"


def _trailer(plan: ExportPlan, **summary: Any) -> dict[str, Any]:
    checkpoint = plan.checkpoint
    body = {
        "format": plan.fmt,
        "exported_at": plan.exported_at,
        "filters": plan.filters.as_dict(),
        **summary,
        "checkpoint": {
            "seq": checkpoint.seq,
            "head_hash": checkpoint.head_hash,
            "at": format_time(checkpoint.at),
            "key_id": checkpoint.key_id,
            "signature": checkpoint.signature,
        },
    }
    return {"trailer": body, "signature": sign(settings.AUDIT_HMAC_KEY, body)}


# ----------------------------------------------------------------------------- offline check


@dataclass(frozen=True)
class FileReport:
    ok: bool
    events: int
    message: str
    first_broken_seq: int | None = None
    full_chain: bool = False


TRAILER_TAIL = 65536  # the trailer line is far shorter: filters are bounded form fields


def _read_trailer(handle: BinaryIO) -> tuple[str, int, dict[str, Any]]:
    """The format, the body's length in bytes, and the parsed trailer (the file's last line)."""
    size = handle.seek(0, io.SEEK_END)
    start = max(0, size - TRAILER_TAIL)
    handle.seek(start)
    tail = handle.read()
    if not tail.endswith(b"\n"):
        raise ValueError("the file does not end with a complete trailer line (truncated?)")
    cut = tail.rfind(b"\n", 0, len(tail) - 1) + 1
    if cut == 0 and start > 0:
        raise ValueError("no trailer line found at the end of the file")
    last = tail[cut:].decode()
    body_length = start + cut
    if last.startswith(CSV_TRAILER_MARK):
        _mark, trailer_json = next(csv.reader([last]))
        return "csv", body_length, json.loads(trailer_json)
    return "jsonl", body_length, json.loads(last)


def _body_digest(handle: BinaryIO, length: int) -> str:
    digest = hashlib.sha256()
    handle.seek(0)
    remaining = length
    while remaining:
        chunk = handle.read(min(1 << 20, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def _parse_body(fmt: str, handle: BinaryIO, length: int) -> Iterator[tuple[dict[str, Any], str]]:
    """The events of the body, one at a time (constant memory)."""
    handle.seek(0)
    body = io.TextIOWrapper(_Limited(handle, length), encoding="utf-8", newline="")
    if fmt == "jsonl":
        for line in body:
            record = json.loads(line)
            stored_hash = record.pop("hash")
            yield event_content(**record), stored_hash
        return
    reader = csv.reader(body)
    header = next(reader)
    if header != [*EVENT_FIELDS, "hash"]:
        raise ValueError("the CSV header is not an audit export header")
    for cells in reader:
        values = dict(zip(header, cells, strict=True))
        stored_hash = values.pop("hash")
        values["seq"] = int(values["seq"])
        values["actor_id"] = int(values["actor_id"]) if values["actor_id"] else None
        values["before"] = json.loads(values["before"])
        values["after"] = json.loads(values["after"])
        yield event_content(**values), stored_hash


class _Limited(io.RawIOBase):
    """A read-only view of the first ``length`` bytes of a binary file."""

    def __init__(self, handle: BinaryIO, length: int) -> None:
        self.handle, self.remaining = handle, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.remaining <= 0:
            return 0
        data = self.handle.read(min(len(buffer), self.remaining))
        buffer[: len(data)] = data
        self.remaining -= len(data)
        return len(data)


def verify_export_file(path: Path, key: bytes) -> FileReport:
    """Check an exported file offline: trailer signature, body digest, every event's hash, the
    links between consecutive events, and the signed checkpoint."""
    try:
        with path.open("rb") as handle:
            return _verify_open_file(handle, key)
    except OSError as exc:
        return FileReport(False, 0, f"cannot read {path}: {exc.strerror}")


def _verify_open_file(handle: BinaryIO, key: bytes) -> FileReport:
    try:
        fmt, body_length, trailer_doc = _read_trailer(handle)
        trailer, signature = trailer_doc["trailer"], trailer_doc["signature"]
    except (ValueError, KeyError, TypeError, StopIteration) as exc:
        return FileReport(False, 0, f"not a readable audit export: {exc}")
    if trailer.get("checkpoint", {}).get("key_id") != key_id(key):
        return FileReport(False, 0, "the file was signed with another audit key than the one given")
    if not signatures_match(sign(key, trailer), signature):
        return FileReport(False, 0, "the trailer's signature does not match: the trailer was altered")
    if _body_digest(handle, body_length) != trailer["sha256"]:
        return FileReport(False, 0, "the file's events were altered, removed or added after export")
    checkpoint = trailer["checkpoint"]
    signed = checkpoint_signature(key, seq=checkpoint["seq"], head_hash=checkpoint["head_hash"], at=checkpoint["at"])
    if not signatures_match(signed, checkpoint["signature"]):
        return FileReport(False, 0, "the checkpoint in the trailer is not signed by this key")
    count, previous = 0, None
    try:
        for content, stored_hash in _parse_body(fmt, handle, body_length):
            count += 1
            seq = content["seq"]
            if event_hash(content) != stored_hash:
                return FileReport(False, count, f"event #{seq} does not match its hash", seq)
            if previous is not None and seq == previous[0] + 1 and content["prev_hash"] != previous[1]:
                return FileReport(False, count, f"event #{seq} does not link to #{seq - 1}", seq)
            if previous is None and seq == 1 and content["prev_hash"] != GENESIS_HASH:
                return FileReport(False, count, "event #1 does not start the chain", 1)
            previous = (seq, stored_hash)
    except (ValueError, KeyError, TypeError) as exc:
        return FileReport(False, count, f"malformed event line: {exc}")
    if count != trailer["count"]:
        return FileReport(False, count, f"the trailer counts {trailer['count']} event(s), the file holds {count}")
    if previous and previous[0] == checkpoint["seq"] and previous[1] != checkpoint["head_hash"]:
        return FileReport(False, count, "the last event differs from the signed head", previous[0])
    full = not trailer["filters"] and (count == 0 or (trailer["first_seq"] == 1 and trailer["last_seq"] == count))
    scope = "the whole chain" if full else "a filtered selection"
    return FileReport(True, count, f"{count} event(s) verified ({scope}), signed head #{checkpoint['seq']}", None, full)
