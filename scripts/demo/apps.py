"""The buggy consumers' business logic: each decides from a message's content whether it fails.

These are the user's applications in miniature: an orders service, a payments service and a Kafka
Connect JDBC sink. They raise :class:`AppFailure` with the kind of failure an operator meets
(a dependency timeout, a schema error, a business reject, an unregistered Celery task, poison) and
the context the runtimes put in their error messages; :mod:`scripts.demo.stacks` renders it the
way Python, Spring Kafka or Kafka Connect would report it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from scripts.demo.mix import DEGRADED_ACQUIRER, DEGRADED_WAREHOUSE, NOTE_HEADER, REGISTERED_TASKS

MAX_PAYLOAD_BYTES = 256 * 1024
JDBC_MAX_ROW_BYTES = 65_535


class AppFailure(Exception):
    """A message the consumer could not process. ``kind`` is one of the keys of stacks.py's catalogues."""

    def __init__(self, kind: str, message: str, **context: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.context = context


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        following = body[exc.start + 1 : exc.start + 2] or body[exc.start : exc.start + 1]
        raise AppFailure(
            "not_utf8", str(exc), byte=f"0x{body[exc.start]:02x}", next_byte=f"0x{following[0]:02x}", position=exc.start
        ) from exc


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise AppFailure("too_deep", str(exc)) from exc


def _celery_task_name(document: Any, headers: Mapping[str, Any]) -> str | None:
    """The task name of a Celery message: AMQP headers, or kombu's JSON envelope (SQS, Kafka)."""
    if headers.get("task"):
        return str(headers["task"])
    if isinstance(document, dict) and isinstance(document.get("headers"), dict) and "body" in document:
        task = document["headers"].get("task")
        return str(task) if task else None
    return None


def handle_order(body: bytes, headers: Mapping[str, Any]) -> None:
    """The orders service's handler: returns when the order was processed, raises AppFailure if not."""
    if len(body) > MAX_PAYLOAD_BYTES:
        raise AppFailure(
            "too_large", f"payload of {len(body)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit", size=len(body)
        )
    document = _parse(_decode(body))
    task = _celery_task_name(document, headers)
    if task is not None:
        if task not in REGISTERED_TASKS:
            raise AppFailure("celery_task", repr(task), task=task)
        return
    note = str(headers.get(NOTE_HEADER, ""))
    if "<" in note:
        raise AppFailure("hostile_header", f"customer note contains markup: {note}", note=note)
    order_id = str(document.get("order_id", "?"))
    if "amount" not in document:
        raise AppFailure("schema", "'amount' is a required property", order_id=order_id, field="amount")
    if document.get("event_type") == "order.cancelled" and document.get("status") == "shipped":
        raise AppFailure("business", f"order {order_id} was already shipped", order_id=order_id)
    if document.get("warehouse") == DEGRADED_WAREHOUSE:
        host = f"inventory-{DEGRADED_WAREHOUSE}.internal"
        raise AppFailure(
            "timeout", f"HTTPSConnectionPool(host='{host}', port=443): Read timed out. (read timeout=5)", host=host
        )


def handle_payment(body: bytes, headers: Mapping[str, Any]) -> None:
    """The payments service's handler: returns when the payment was processed, raises AppFailure if not."""
    document = _parse(_decode(body))
    payment_id = str(document.get("payment_id", "?"))
    if "amount" not in document:
        raise AppFailure("schema", "'amount' is a required property", payment_id=payment_id, field="amount")
    if document.get("event_type") == "payment.captured" and document.get("status") == "captured":
        raise AppFailure("business", f"payment {payment_id} was already captured", payment_id=payment_id)
    if document.get("acquirer") == DEGRADED_ACQUIRER:
        host = f"{DEGRADED_ACQUIRER}.gateway.internal"
        raise AppFailure(
            "timeout", f"HTTPSConnectionPool(host='{host}', port=443): Read timed out. (read timeout=10)", host=host
        )


def jdbc_sink_put(body: bytes, headers: Mapping[str, Any]) -> None:
    """A JDBC sink connector writing orders to a table: converter errors and rejected rows raise."""
    document = _parse(_decode(body))
    if _celery_task_name(document, headers) is not None:
        raise AppFailure("celery_task", "unknown fields", fields=sorted(document))
    if not isinstance(document, dict) or "amount" not in document:
        raise AppFailure("schema", "null amount", order_id=str(document.get("order_id", "?")))
    if len(body) > JDBC_MAX_ROW_BYTES:
        raise AppFailure("too_large", "value too long", size=len(body))


def decode_base64_body(text: str) -> bytes:
    """The bytes of an SQS body a producer had to send as base64 text (SQS bodies must be text)."""
    return base64.b64decode(text.encode("ascii"), validate=True)
