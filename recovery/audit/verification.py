"""Recompute the audit chain and report its first broken link (invariant 8).

``verify_chain`` walks the events in the database in sequence order with constant memory;
``verify_export_file`` checks an exported file offline against its signed trailer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from recovery.audit.canonical import (
    GENESIS_HASH,
    checkpoint_signature,
    event_content,
    event_hash,
    format_time,
    key_id,
    signatures_match,
)
from recovery.models import AuditCheckpoint, AuditEvent

DB_FIELDS = (
    "seq", "at", "actor_id", "actor_name", "client_ip", "user_agent", "request_id", "trace_id", "action",
    "object_type", "object_id", "summary", "before", "after", "reason", "prev_hash", "hash",
)  # fmt: skip


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    head_seq: int | None
    first_broken_seq: int | None
    message: str
    checkpoints_checked: int = 0


class _Walker:
    """Checks events one at a time, in the order given; remembers the first break."""

    def __init__(self) -> None:
        self.expected_seq = 1
        self.prev_hash = GENESIS_HASH
        self.checked = 0
        self.broken: tuple[int, str] | None = None

    def feed(self, content: dict[str, Any], stored_hash: str) -> None:
        self.checked += 1
        if self.broken:
            return
        seq = content["seq"]
        if seq != self.expected_seq:
            missing = "missing" if seq > self.expected_seq else "out of order"
            self.broken = (
                self.expected_seq,
                f"event #{self.expected_seq} is {missing} (found #{seq} in its place)",
            )
        elif content["prev_hash"] != self.prev_hash:
            self.broken = (
                seq,
                f"event #{seq} does not link to #{seq - 1}: an event was deleted, inserted or moved",
            )
        elif event_hash(content) != stored_hash:
            self.broken = (seq, f"event #{seq} was changed after it was written (its hash does not match)")
        self.expected_seq = seq + 1
        self.prev_hash = stored_hash


def _db_rows(upto_seq: int | None) -> Iterator[tuple[Any, ...]]:
    events = AuditEvent.objects.order_by("seq")
    if upto_seq is not None:
        events = events.filter(seq__lte=upto_seq)
    return events.values_list(*DB_FIELDS).iterator(chunk_size=5000)


def content_from_row(row: tuple[Any, ...]) -> tuple[dict[str, Any], str]:
    values = dict(zip(DB_FIELDS, row, strict=True))
    stored_hash = values.pop("hash")
    return event_content(**values), stored_hash


def verify_chain(*, upto_seq: int | None = None, progress: Callable[[int], None] | None = None) -> ChainReport:
    """Walk the whole chain (or up to ``upto_seq``) and every signed checkpoint within it."""
    key = settings.AUDIT_HMAC_KEY
    current_key = key_id(key)
    checkpoints: dict[int, list[AuditCheckpoint]] = {}
    for checkpoint in AuditCheckpoint.objects.order_by("seq"):
        checkpoints.setdefault(checkpoint.seq, []).append(checkpoint)
    walker = _Walker()
    head_seq = None
    checkpoint_break: tuple[int, str] | None = None
    checked_checkpoints = other_key = 0
    for row in _db_rows(upto_seq):
        content, stored_hash = content_from_row(row)
        walker.feed(content, stored_hash)
        head_seq = content["seq"]
        for checkpoint in checkpoints.get(head_seq, ()):
            if checkpoint.key_id != current_key:
                other_key += 1
                continue
            checked_checkpoints += 1
            signed = checkpoint_signature(
                key, seq=checkpoint.seq, head_hash=checkpoint.head_hash, at=format_time(checkpoint.at)
            )
            if checkpoint_break is None and not signatures_match(signed, checkpoint.signature):
                checkpoint_break = (head_seq, f"the checkpoint at #{head_seq} is not signed by the audit key")
            elif checkpoint_break is None and checkpoint.head_hash != stored_hash:
                rewritten = f"event #{head_seq} differs from the signed checkpoint: the chain was rewritten"
                checkpoint_break = (head_seq, rewritten)
        if progress and walker.checked % 50_000 == 0:
            progress(walker.checked)
    last_signed = max((seq for seq in checkpoints if upto_seq is None or seq <= upto_seq), default=0)
    if checkpoint_break is None and last_signed > (head_seq or 0):
        end = (head_seq or 0) + 1
        checkpoint_break = (end, f"a checkpoint signed the chain up to #{last_signed}, but it ends before #{end}")
    breaks = [b for b in (walker.broken, checkpoint_break) if b]
    tail = f"; {other_key} checkpoint(s) signed with another key not checked" if other_key else ""
    if breaks:
        seq, message = min(breaks)
        return ChainReport(False, walker.checked, head_seq, seq, message + tail, checked_checkpoints)
    message = f"{walker.checked} event(s) and {checked_checkpoints} signed checkpoint(s) verified" + tail
    return ChainReport(True, walker.checked, head_seq, None, message, checked_checkpoints)
