"""A dead letter's idempotency key: the name of the logical message, the same in every replay of
it by any plan (invariant 3; issue 15 part 2; docs/replay.md "Which header to dedupe on").

``x-replay-id`` names one delivery attempt series, (plan, letter): a second plan replaying the
letter sends a new one, and SQS FIFO uses it as the MessageDeduplicationId so a deliberate
"replay again" is not dropped inside SQS's five-minute window. ``x-idempotency-key`` names the
message itself and never changes, so a consumer deduping on it processes a letter at most once
however often it is replayed.

The key is the one the captured message already carries (set by its producer, or by an earlier
replay of a letter that came back to a DLQ: the returned letter names the same logical message),
else derived from the letter's broker identity, which never changes for the life of the letter
(revisions of a letter keep it). Only the letter's own content is read, so the engine computes
it from what its claim returns, without a query.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

IDEMPOTENCY_KEY = "x-idempotency-key"
MAX_KEY = 200


class Identified(Protocol):
    headers: Any
    identity: str


def idempotency_key(letter: Identified) -> str:
    carried = _carried(letter.headers)
    if carried:
        return carried
    return "dl-" + hashlib.sha256(f"dead-letter:{letter.identity}".encode()).hexdigest()[:40]


def _carried(headers: Any) -> str:
    if not isinstance(headers, dict):
        return ""
    value = headers.get(IDEMPOTENCY_KEY)
    if isinstance(value, dict):  # an SQS message attribute as captured
        value = value.get("StringValue")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.strip()[:MAX_KEY] if isinstance(value, str) else ""
