"""RabbitMQ demo apps: an orders service the broker dead-letters, a payments service that republishes.

- Orders: topic exchange ``<prefix>.orders`` -> queue ``<prefix>.orders.work`` declared with
  ``x-dead-letter-exchange: <prefix>.orders.dlx`` (fanout) -> ``<prefix>.orders.dlq``. The consumer
  ``basic_reject(requeue=False)``s what it cannot process, so RabbitMQ itself moves those messages
  and stamps ``x-death`` / ``x-first-death-*`` on them.
- Payments: topic exchange ``<prefix>.payments`` -> ``<prefix>.payments.work``. Its consumer, as many
  apps do, republishes each failure to ``<prefix>.payments.dlq`` with ``x-exception-*`` headers
  (confirmed) and then acks the original.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import ChannelClosedByBroker

from scripts.demo.apps import AppFailure, handle_order, handle_payment
from scripts.demo.common import DEFAULT_TIMEOUT, DlqReport, SeedError, check_flow_state, require_env, wait_for_depth
from scripts.demo.mix import DemoMessage, order_mix, payment_mix
from scripts.demo.stacks import python_error

PAYMENTS_HEADER_MAPPING = {
    "error_class": "x-exception-class",
    "error_message": "x-exception-message",
    "stack_trace": "x-exception-stacktrace",
    "attempt_count": "x-retry-count",
    "origin": "x-original-queue",
}


@dataclass(frozen=True)
class RabbitNames:
    """The exchanges and queues of one demo prefix."""

    prefix: str

    @property
    def orders_exchange(self) -> str:
        return f"{self.prefix}.orders"

    @property
    def orders_dlx(self) -> str:
        return f"{self.prefix}.orders.dlx"

    @property
    def orders_work(self) -> str:
        return f"{self.prefix}.orders.work"

    @property
    def orders_dlq(self) -> str:
        return f"{self.prefix}.orders.dlq"

    @property
    def payments_exchange(self) -> str:
        return f"{self.prefix}.payments"

    @property
    def payments_work(self) -> str:
        return f"{self.prefix}.payments.work"

    @property
    def payments_dlq(self) -> str:
        return f"{self.prefix}.payments.dlq"

    @property
    def queues(self) -> list[str]:
        return [self.orders_work, self.orders_dlq, self.payments_work, self.payments_dlq]

    @property
    def exchanges(self) -> list[str]:
        return [self.orders_exchange, self.orders_dlx, self.payments_exchange]


def connection_parameters() -> pika.URLParameters:
    """pika parameters from LOCAL_RABBITMQ_URL (no password in it) plus the username/password variables."""
    parameters = pika.URLParameters(require_env("LOCAL_RABBITMQ_URL"))
    parameters.credentials = pika.PlainCredentials(
        require_env("LOCAL_RABBITMQ_USERNAME"), require_env("LOCAL_RABBITMQ_PASSWORD")
    )
    parameters.blocked_connection_timeout = 30
    return parameters


def _connect() -> BlockingConnection:
    try:
        return pika.BlockingConnection(connection_parameters())
    except pika.exceptions.AMQPConnectionError as exc:
        raise SeedError(f"cannot connect to RabbitMQ at {require_env('LOCAL_RABBITMQ_URL')}: {exc!r}") from exc


def _declare(connection: BlockingConnection, names: RabbitNames) -> None:
    channel = connection.channel()
    try:
        channel.exchange_declare(names.orders_exchange, "topic", durable=True)
        channel.exchange_declare(names.orders_dlx, "fanout", durable=True)
        channel.exchange_declare(names.payments_exchange, "topic", durable=True)
        channel.queue_declare(names.orders_dlq, durable=True)
        channel.queue_bind(names.orders_dlq, names.orders_dlx)
        channel.queue_declare(names.orders_work, durable=True, arguments={"x-dead-letter-exchange": names.orders_dlx})
        channel.queue_bind(names.orders_work, names.orders_exchange, "order.#")
        channel.queue_bind(names.orders_work, names.orders_exchange, "orders.tasks.#")
        channel.queue_declare(names.payments_dlq, durable=True)
        channel.queue_declare(names.payments_work, durable=True)
        channel.queue_bind(names.payments_work, names.payments_exchange, "payment.#")
    except ChannelClosedByBroker as exc:
        raise SeedError(
            f"cannot declare the demo topology of prefix {names.prefix!r} ({exc.reply_text}); "
            "pass reset=True (--reset) to recreate it"
        ) from exc
    channel.close()


def remove_rabbitmq(prefix: str) -> None:
    """Delete the demo's queues and exchanges of ``prefix`` (missing ones are fine)."""
    names = RabbitNames(prefix)
    connection = _connect()
    try:
        for queue in names.queues:
            _quietly(connection, lambda channel, queue=queue: channel.queue_delete(queue))
        for exchange in names.exchanges:
            _quietly(connection, lambda channel, exchange=exchange: channel.exchange_delete(exchange))
    finally:
        connection.close()


def _quietly(connection: BlockingConnection, action: Callable[[BlockingChannel], Any]) -> None:
    """Run ``action`` on a fresh channel; a broker refusal (e.g. 404) only closes that channel."""
    channel = connection.channel()
    try:
        action(channel)
    except ChannelClosedByBroker:
        return
    channel.close()


def queue_depth(connection: BlockingConnection, queue: str) -> int:
    """Ready messages in ``queue`` (a passive declare: exact, unlike the management API's 5 s stats)."""
    channel = connection.channel()
    try:
        return channel.queue_declare(queue, passive=True).method.message_count
    except ChannelClosedByBroker as exc:
        raise SeedError(f"RabbitMQ queue {queue} is missing: {exc.reply_text}") from exc
    finally:
        if channel.is_open:
            channel.close()


def _properties(message: DemoMessage) -> pika.BasicProperties:
    if message.celery is not None:
        return pika.BasicProperties(
            content_type=message.content_type,
            content_encoding="utf-8",
            delivery_mode=2,
            priority=0,
            correlation_id=message.correlation_id,
            reply_to=f"{message.message_id}.reply",
            message_id=message.message_id,
            timestamp=int(time.time()),
            headers=message.celery,
        )
    return pika.BasicProperties(
        content_type=message.content_type,
        content_encoding="utf-8",
        delivery_mode=2,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        timestamp=int(time.time()),
        type=message.event_type,
        app_id=message.app_id,
        headers=message.headers,
    )


def _publish(connection: BlockingConnection, exchange: str, messages: list[DemoMessage]) -> None:
    """The producer: publishes each message with a publisher confirm (mandatory, so unroutable fails)."""
    channel = connection.channel()
    channel.confirm_delivery()
    for message in messages:
        channel.basic_publish(exchange, message.event_type, message.body, _properties(message), mandatory=True)
    channel.close()


Handler = Callable[[BlockingChannel, Any, pika.BasicProperties, bytes], None]


def _consume(connection: BlockingConnection, queue: str, count: int, handler: Handler, *, deadline: float) -> None:
    """Deliver ``count`` messages of ``queue`` to ``handler``, which acks, rejects or republishes."""
    channel = connection.channel()
    channel.basic_qos(prefetch_count=10)
    handled = 0
    for method, properties, body in channel.consume(queue, inactivity_timeout=0.5):
        if method is None:
            if time.monotonic() > deadline:
                raise SeedError(f"timed out consuming {queue}: handled {handled} of {count} messages")
            continue
        handler(channel, method, properties, body)
        handled += 1
        if handled >= count:
            break
    channel.cancel()
    channel.close()


def _orders_handler(channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
    """The orders service: ack what it processed, reject the rest so that RabbitMQ dead-letters it."""
    try:
        handle_order(body, properties.headers or {})
    except AppFailure:
        channel.basic_reject(method.delivery_tag, requeue=False)
    else:
        channel.basic_ack(method.delivery_tag)


def _payments_handler(names: RabbitNames, connection: BlockingConnection) -> Handler:
    """The payments service: republish each failure to its DLQ with x-exception-* headers, then ack."""
    publisher = connection.channel()
    publisher.confirm_delivery()

    def handle(channel: BlockingChannel, method: Any, properties: pika.BasicProperties, body: bytes) -> None:
        try:
            handle_payment(body, properties.headers or {})
        except AppFailure as failure:
            error = python_error(failure, app="payments")
            properties.headers = {
                **(properties.headers or {}),
                "x-exception-class": error.error_class,
                "x-exception-message": error.message,
                "x-exception-stacktrace": error.stack,
                "x-retry-count": error.retries,
                "x-original-queue": names.payments_work,
                "x-original-exchange": method.exchange,
                "x-original-routing-key": method.routing_key,
            }
            publisher.basic_publish("", names.payments_dlq, body, properties, mandatory=True)
        channel.basic_ack(method.delivery_tag)

    return handle


def _seed_flow(
    connection: BlockingConnection,
    report: DlqReport,
    *,
    exchange: str,
    work: str,
    messages: list[DemoMessage],
    make_handler: Callable[[], Handler],
    deadline: float,
) -> None:
    depth = queue_depth(connection, report.address)
    if check_flow_state(report.address, depth, report.expected) == "present":
        report.status, report.depth = "present", depth
        return
    _quietly(connection, lambda channel: channel.queue_purge(work))  # leftovers of an interrupted run
    _publish(connection, exchange, messages)
    _consume(connection, work, len(messages), make_handler(), deadline=deadline)
    remaining = max(deadline - time.monotonic(), 1.0)
    report.depth = wait_for_depth(
        report.address, lambda: queue_depth(connection, report.address), report.expected, timeout=remaining
    )


def seed_rabbitmq(prefix: str = "demo", *, reset: bool = False, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Create the orders and payments flows of ``prefix`` and let their consumers fail half the mix.

    Idempotent: a flow whose DLQ already holds its expected messages is left alone. ``reset`` deletes
    the queues and exchanges first. Raises SeedError naming the queue if it is not filled in ``timeout``.
    """
    started = time.monotonic()
    deadline = started + timeout
    names = RabbitNames(prefix)
    if reset:
        remove_rabbitmq(prefix)
    orders, payments = order_mix(), payment_mix()
    orders_report = DlqReport(
        address=names.orders_dlq,
        expected=sum(m.fails for m in orders),
        sources=[names.orders_work],
        replay_target=names.orders_work,
        extra={"metadata": "x-death", "dead_letter_exchange": names.orders_dlx},
    )
    payments_report = DlqReport(
        address=names.payments_dlq,
        expected=sum(m.fails for m in payments),
        sources=[names.payments_work],
        replay_target=names.payments_work,
        extra={"metadata": "headers", "header_mapping": dict(PAYMENTS_HEADER_MAPPING)},
    )
    parameters = connection_parameters()
    connection = _connect()
    try:
        _declare(connection, names)
        _seed_flow(
            connection,
            orders_report,
            exchange=names.orders_exchange,
            work=names.orders_work,
            messages=orders,
            make_handler=lambda: _orders_handler,
            deadline=deadline,
        )
        _seed_flow(
            connection,
            payments_report,
            exchange=names.payments_exchange,
            work=names.payments_work,
            messages=payments,
            make_handler=lambda: _payments_handler(names, connection),
            deadline=deadline,
        )
    except pika.exceptions.AMQPError as exc:
        raise SeedError(f"RabbitMQ failed while seeding prefix {prefix!r}: {exc!r}") from exc
    finally:
        if connection.is_open:
            connection.close()
    return {
        "broker": "rabbitmq",
        "vhost": parameters.virtual_host,
        "exchanges": names.exchanges,
        "seeded": "seeded" in (orders_report.status, payments_report.status),
        "dlqs": [orders_report.as_dict(), payments_report.as_dict()],
        "elapsed_s": round(time.monotonic() - started, 2),
    }
