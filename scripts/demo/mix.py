"""The message mix the demo's producers publish: orders and payments events, Celery tasks, poison.

Each message is broker-neutral here; every seeder gives it its broker's shape (AMQP properties,
SQS message attributes, Kafka headers). Whether a message fails is NOT stored on it: the consumers
in :mod:`scripts.demo.apps` decide from its content, as a real buggy consumer would. ``fails`` only
tells the seeder how many dead letters to wait for.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ONE_MIB = 1024 * 1024
NESTING_DEPTH = 5000
HOSTILE_NOTE = "<script>alert(1)</script>"
NOTE_HEADER = "x-customer-note"
# The dependency that is down in the demo: the inventory service of one warehouse, one card acquirer.
DEGRADED_WAREHOUSE = "eu-west-3"
DEGRADED_ACQUIRER = "acquirer-b"
# Celery tasks the orders worker knows; any other task name is rejected as unregistered.
REGISTERED_TASKS = frozenset({"orders.tasks.send_receipt"})
CELERY_ORIGIN = "gen4211@orders-api-7d9f8c6b5-xk2lp"


@dataclass(frozen=True)
class DemoMessage:
    """One message as the user's producer publishes it.

    ``headers`` are application headers (AMQP headers, SQS message attributes, Kafka headers);
    ``celery`` holds Celery protocol 2 headers for a task message, whose ``body`` is then
    ``[args, kwargs, embed]`` as JSON. ``fails`` / ``sink_fails``: whether the orders service / the
    Kafka Connect JDBC sink is expected to fail it (counts to wait for, not an instruction).
    """

    key: str
    event_type: str
    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    content_type: str = "application/json"
    app_id: str = "orders-api"
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    correlation_id: str = field(default_factory=lambda: f"corr-{uuid.uuid4().hex[:16]}")
    celery: dict[str, Any] | None = None
    fails: bool = False
    sink_fails: bool = False


def _traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _order(number: int, event_type: str = "order.created", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": _now(),
        "order_id": f"ORD-{number}",
        "customer_id": f"CUS-{2000 + number % 97}",
        "warehouse": ("eu-west-1", "eu-central-1", "us-east-1")[number % 3],
        "currency": "EUR",
        "amount": f"{19 + number % 180}.{number % 100:02d}",
        "items": [{"sku": f"SKU-{number % 40:03d}", "qty": 1 + number % 3, "unit_price": "12.50"}],
        "status": "new",
    }
    document.update(fields)
    return document


def _order_message(
    document: dict[str, Any], *, fails: bool = False, sink_fails: bool = False, **headers: Any
) -> DemoMessage:
    return DemoMessage(
        key=document["order_id"],
        event_type=document["event_type"],
        body=_json(document),
        headers={"x-tenant": "acme-eu", "x-source": "checkout-web", "traceparent": _traceparent(), **headers},
        fails=fails,
        sink_fails=sink_fails,
    )


def celery_task(name: str, args: list[Any], kwargs: dict[str, Any], *, retries: int = 0, fails: bool) -> DemoMessage:
    """A Celery protocol 2 task message (headers + ``[args, kwargs, embed]`` body)."""
    task_id = str(uuid.uuid4())
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    headers = {
        "lang": "py",
        "task": name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": expires,
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [None, None],
        "root_id": str(uuid.uuid4()),
        "parent_id": str(uuid.uuid4()),
        "argsrepr": repr(tuple(args)),
        "kwargsrepr": repr(kwargs),
        "origin": CELERY_ORIGIN,
        "ignore_result": False,
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    return DemoMessage(
        key=str(args[0]) if args else task_id,
        event_type=name,
        body=_json([args, kwargs, embed]),
        app_id="",
        message_id=task_id,
        correlation_id=task_id,
        celery=headers,
        fails=fails,
        sink_fails=True,  # a JDBC sink cannot map a Celery envelope to the orders table
    )


def kombu_envelope(message: DemoMessage, *, routing_key: str) -> DemoMessage:
    """The Celery task as kombu's virtual transports (SQS, Kafka) carry it: a JSON envelope body."""
    assert message.celery is not None
    envelope = {
        "body": base64.b64encode(message.body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.celery,
        "properties": {
            "correlation_id": message.correlation_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return DemoMessage(
        key=message.key,
        event_type=message.event_type,
        body=_json(envelope),
        app_id="",
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        fails=message.fails,
        sink_fails=message.sink_fails,
    )


def _poison_orders(base: int, big_body: int) -> list[DemoMessage]:
    latin1 = _order(base, customer_name="Renée Müller", note="livraison après 18h")
    big = _order(base + 1, attachment=base64.b64encode(b"\x89PNG" * (ONE_MIB // 4)).decode("ascii"))
    skeleton = _json(big)
    # Trim the attachment so that the whole body is exactly ``big_body`` bytes.
    big["attachment"] = big["attachment"][: len(big["attachment"]) - (len(skeleton) - big_body)]
    deep_prefix = _json(_order(base + 2))[:-1] + b',"metadata":'
    deep = deep_prefix + b"[" * (NESTING_DEPTH - 1) + b"]" * (NESTING_DEPTH - 1) + b"}"
    hostile = _order(base + 3)
    return [
        DemoMessage(
            key=latin1["order_id"],
            event_type="order.created",
            # A producer that encodes JSON as Latin-1: not UTF-8.
            body=json.dumps(latin1, ensure_ascii=False).encode("latin-1"),
            headers={"x-tenant": "acme-fr", "x-source": "legacy-pos", "traceparent": _traceparent()},
            fails=True,
            sink_fails=True,
        ),
        _order_message(big, fails=True, sink_fails=True),
        DemoMessage(
            key=f"ORD-{base + 2}",
            event_type="order.created",
            body=deep,
            headers={"x-tenant": "acme-eu", "x-source": "partner-api", "traceparent": _traceparent()},
            fails=True,
            sink_fails=True,
        ),
        _order_message(hostile, fails=True, **{NOTE_HEADER: HOSTILE_NOTE}),
    ]


def order_mix(*, big_body: int = ONE_MIB) -> list[DemoMessage]:
    """24 orders-flow messages, 12 of which the orders consumer fails.

    Failures: 3 inventory timeouts, 2 schema errors, 2 business rejects, 1 unregistered Celery
    task, and 4 poison messages (not UTF-8, ``big_body`` bytes (1 MiB), nested 5,000 deep, a script
    in a header). SQS counts message attributes in its 1 MiB limit, so its seeder asks for less.
    """
    messages = [_order_message(_order(10001 + n)) for n in range(7)]
    messages += [_order_message(_order(10008 + n, "order.paid", status="paid")) for n in range(2)]
    messages.append(_order_message(_order(10010, "order.cancelled")))
    messages.append(_order_message(_order(10011, customer_name="Zoë Ångström 東京")))
    messages.append(celery_task("orders.tasks.send_receipt", ["ORD-10003"], {"channel": "email"}, fails=False))
    messages += [_order_message(_order(10020 + n, warehouse=DEGRADED_WAREHOUSE), fails=True) for n in range(3)]
    for n in range(2):
        document = _order(10030 + n)
        del document["amount"]
        messages.append(_order_message(document, fails=True, sink_fails=True))
    messages += [_order_message(_order(10040 + n, "order.cancelled", status="shipped"), fails=True) for n in range(2)]
    messages.append(
        celery_task("orders.tasks.reserve_stock", ["ORD-10050"], {"warehouse": "eu-west-1"}, retries=3, fails=True)
    )
    messages += _poison_orders(10060, big_body)
    random.Random(7).shuffle(messages)  # noqa: S311 - a fixed, realistic interleaving, not security
    return messages


def _payment(number: int, event_type: str = "payment.authorized", **fields: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "occurred_at": _now(),
        "payment_id": f"PAY-{number}",
        "order_id": f"ORD-{number - 10000}",
        "acquirer": "acquirer-a",
        "method": "card",
        "card_last4": f"{number % 10000:04d}",
        "currency": "EUR",
        "amount": f"{25 + number % 90}.{number % 100:02d}",
        "status": "authorized",
    }
    document.update(fields)
    return document


def _payment_message(document: dict[str, Any], *, fails: bool = False) -> DemoMessage:
    return DemoMessage(
        key=document["payment_id"],
        event_type=document["event_type"],
        body=_json(document),
        headers={"x-tenant": "acme-eu", "x-source": "payments-api", "traceparent": _traceparent()},
        app_id="payments-api",
        fails=fails,
    )


def payment_mix() -> list[DemoMessage]:
    """16 payments-flow messages, 8 of which the payments consumer fails and republishes.

    Failures: 3 acquirer timeouts, 2 schema errors, 2 business rejects, 1 not UTF-8.
    """
    messages = [_payment_message(_payment(20001 + n)) for n in range(5)]
    messages += [_payment_message(_payment(20006 + n, "payment.captured")) for n in range(3)]
    messages += [_payment_message(_payment(20010 + n, acquirer=DEGRADED_ACQUIRER), fails=True) for n in range(3)]
    for n in range(2):
        document = _payment(20020 + n)
        del document["amount"]
        messages.append(_payment_message(document, fails=True))
    messages += [
        _payment_message(_payment(20030 + n, "payment.captured", status="captured"), fails=True) for n in range(2)
    ]
    latin1 = _payment(20040, holder="François Lefèvre")
    messages.append(
        DemoMessage(
            key=latin1["payment_id"],
            event_type="payment.authorized",
            body=json.dumps(latin1, ensure_ascii=False).encode("latin-1"),
            headers={"x-tenant": "acme-fr", "x-source": "legacy-pos", "traceparent": _traceparent()},
            app_id="payments-api",
            fails=True,
        )
    )
    random.Random(11).shuffle(messages)  # noqa: S311 - a fixed, realistic interleaving, not security
    return messages
