"""RabbitMQ adapter (pika). The only module that imports pika.

How it holds the broker:

- One ``BlockingConnection`` per virtual host, opened on first use and reused until ``close()``.
- One channel per DLQ, kept across ``receive`` calls so that ``remove`` / ``release`` can ack /
  nack by delivery tag. Its consumer starts with the first ``receive`` and keeps running until
  ``release`` or ``close()``, with a prefetch of two batches, so that the next batch is already
  on its way while the caller commits the last one. Messages handed out or prefetched stay
  unacked on the broker until removed or released, or until ``close()`` (the broker then
  requeues them, flagged ``redelivered``): that is how invariant 1 (capture before remove)
  holds without a timer.
- One confirm-mode channel per virtual host for ``publish``. pika's
  ``BlockingChannel.confirm_delivery`` waits for every confirm in turn (~1.6k msg/s here), so the
  batch is published through the underlying (impl) channel with every confirm in flight, and
  resolved by the broker's Basic.Ack / Basic.Nack (``multiple`` honoured) and Basic.Return
  frames (invariant 2: a message counts only when acked and not returned).
- ``list_candidates`` reads the management HTTP API (``options.management_url``).

Not thread-safe: one adapter per job or request, as pika's BlockingConnection requires.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import pika
import pika.exceptions
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from recovery.brokers.base import (
    BrokerError,
    Candidate,
    DlqAddress,
    OutgoingMessage,
    Ping,
    PublishResult,
    ReceivedMessage,
    Target,
    json_safe,
)
from recovery.brokers.credentials import resolve_credentials
from recovery.brokers.timing import stopwatch

if TYPE_CHECKING:
    from recovery.models import Broker

# Reply codes after which retrying the same call cannot succeed: access refused, not found,
# precondition failed, not allowed (vhost).
_PERMANENT_REPLY_CODES = frozenset({403, 404, 406, 530})
# After the first message of a receive, stop once the queue is quiet for this long.
_DRAIN_GAP_SECONDS = 0.05
# While publishing a batch, hand the socket to the broker after this many messages or bytes, so
# that confirms are read as they come and the outbound buffer stays small.
_PUMP_EVERY_MESSAGES = 256
_PUMP_EVERY_BYTES = 4 * 1024 * 1024
_CONFIRM_POLL_SECONDS = 0.002
_MAX_PREFETCH = 65535  # basic.qos prefetch-count is a 16-bit field

_RECEIVED_PROPERTIES = (
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
)
# Properties publish() copies from OutgoingMessage.properties; other keys (SQS, Kafka) are ignored.
# expiration and user_id are left out on purpose: a replay must not expire on the way, and a
# user_id other than the connection's user makes the broker close the channel.
_PUBLISHED_PROPERTIES = (
    "content_type",
    "content_encoding",
    "message_id",
    "correlation_id",
    "type",
    "app_id",
    "reply_to",
)
_DLQ_NAME = re.compile(r"dlq|dead|dlx|error", re.IGNORECASE)


class RabbitMqAdapter:
    """The BrokerAdapter for RabbitMQ (AMQP 0-9-1 through pika, plus the management HTTP API)."""

    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self._connections: dict[str, BlockingConnection] = {}
        self._consumers: dict[tuple[str, str], _Consumer] = {}
        self._publishers: dict[str, _Publisher] = {}
        self._control_channels: dict[str, BlockingChannel] = {}
        self._default_vhost: str | None = None

    # -- connections -------------------------------------------------------------------------

    def connection_parameters(self, *, vhost: str | None = None) -> pika.URLParameters:
        """Parameters from the endpoint URL plus the credentials the reference resolves to at
        connect time (invariant 9: the secret is never stored). ``vhost`` overrides the URL's."""
        try:
            params = pika.URLParameters(self.broker.endpoint or "amqp://127.0.0.1:5672/%2F")
        except Exception as exc:  # pika raises assorted types for a malformed URL
            raise BrokerError(f"invalid AMQP URL: {exc}", permanent=True) from None
        creds = resolve_credentials(self.broker.credentials_ref, ("username", "password"))
        if creds:
            params.credentials = pika.PlainCredentials(creds.get("username", "guest"), creds.get("password", ""))
        if vhost is not None:
            params.virtual_host = vhost
        # Shown in the management UI, so an operator can tell the console's connections apart.
        params.client_properties = {
            "connection_name": f"dlq-console {self.broker.name}",
            **(params.client_properties or {}),
        }
        params.connection_attempts = 1
        params.retry_delay = 0
        params.socket_timeout = self.timeout
        params.stack_timeout = self.timeout
        params.blocked_connection_timeout = self.timeout
        return params

    def ping(self) -> Ping:
        """One authenticated connection open/close on a fresh connection (never the held ones)."""
        params = self.connection_parameters()
        try:
            with stopwatch() as elapsed:
                connection = pika.BlockingConnection(params)
                server = connection._impl.server_properties  # noqa: SLF001 - pika exposes no public accessor
                connection.close()
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise _connect_error(exc, params) from None
        version = server.get("version", b"")
        version = version.decode() if isinstance(version, bytes) else str(version)
        return Ping(latency_ms=elapsed[0], detail=f"RabbitMQ {version}".strip())

    def default_vhost(self) -> str:
        """The vhost of the broker's URL: used when an address or target names none. Worked out
        once per adapter: every receive, remove and publish asks, and resolving the parameters
        reads the credentials (an environment lookup or a secret file)."""
        if self._default_vhost is None:
            self._default_vhost = self.connection_parameters().virtual_host or "/"
        return self._default_vhost

    def _connection(self, vhost: str) -> BlockingConnection:
        """The held connection for ``vhost``, checked for life (a poll also answers heartbeats)
        and reopened when the broker dropped it."""
        connection = self._connections.get(vhost)
        if connection is not None:
            try:
                if connection.is_open:
                    connection.process_data_events(0)
                    return connection
            except (pika.exceptions.AMQPError, OSError):
                pass
            self._forget_connection(vhost)
        params = self.connection_parameters()
        params.virtual_host = vhost  # the address's vhost wins over the URL's
        try:
            connection = pika.BlockingConnection(params)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise _connect_error(exc, params) from None
        self._connections[vhost] = connection
        return connection

    def _forget_connection(self, vhost: str) -> None:
        """Drop a connection and everything opened on it. Unacked deliveries go back to the queue
        when the broker sees the connection end, so forgetting never loses a message."""
        for key in [key for key in self._consumers if key[0] == vhost]:
            del self._consumers[key]
        self._publishers.pop(vhost, None)
        self._control_channels.pop(vhost, None)
        connection = self._connections.pop(vhost, None)
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                connection.close()

    @contextlib.contextmanager
    def _guard(self, vhost: str, what: str, *, on_channel_error: Callable[[], None]) -> Iterator[None]:
        """Turn pika's exceptions into BrokerError with the broker's text. A channel error drops
        the one channel (``on_channel_error``); a connection error drops the vhost's connection,
        so the adapter stays usable for the next call."""
        try:
            yield
        except pika.exceptions.AMQPChannelError as exc:
            on_channel_error()
            raise _channel_error(exc, what) from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self._forget_connection(vhost)
            raise BrokerError(f"{what}: connection lost: {_describe(exc)}") from None

    def close(self) -> None:
        """Close every channel and connection; idempotent. Received but not removed messages are
        requeued by the broker (invariant 1)."""
        for vhost in list(self._connections):
            self._forget_connection(vhost)
        self._consumers.clear()
        self._publishers.clear()
        self._control_channels.clear()

    # -- reading a DLQ -------------------------------------------------------------------------

    def depth(self, address: DlqAddress) -> int:
        """Ready messages. Unacked ones are not counted: those this adapter handed out, and those
        its running consumer has prefetched and not handed out yet (up to two batches), until
        they are removed, released or the adapter is closed."""
        vhost = address.vhost or self.default_vhost()
        what = f"queue {address.name!r} in vhost {vhost!r}"
        connection = self._connection(vhost)
        with self._guard(vhost, what, on_channel_error=lambda: self._control_channels.pop(vhost, None)):
            channel = self._control_channels.get(vhost)
            if channel is None or not channel.is_open:
                channel = self._control_channels[vhost] = connection.channel()
            frame = channel.queue_declare(address.name, passive=True)
        return int(frame.method.message_count)

    def receive(self, address: DlqAddress, *, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` unacked deliveries. Waits up to ``wait_seconds`` for the first,
        then returns once the queue has been quiet for a moment. The messages stay unacked (and
        invisible to other consumers) until ``remove``, ``release`` or ``close`` (invariant 1).

        The first call starts a consumer that runs until ``release`` or ``close``, with a
        prefetch of twice ``max_messages``: while the caller commits one batch, the next is
        already arriving, and no call pays for a consume/cancel round trip. Prefetched messages
        not handed out yet are unacked like the rest (depth() does not count them) and go back
        to the queue, flagged redelivered, when the adapter is closed or releases."""
        if max_messages < 1:
            return []
        vhost = address.vhost or self.default_vhost()
        key = (vhost, address.name)
        what = f"queue {address.name!r} in vhost {vhost!r}"
        consumer = self._consumer(address)
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        got: list[ReceivedMessage] = []
        with self._guard(vhost, what, on_channel_error=lambda: self._drop_consumer(key)):
            consumer.ensure_started(address.name, prefetch=min(2 * max_messages, _MAX_PREFETCH))
            while True:
                while consumer.buffer and len(got) < max_messages:
                    message = consumer.buffer.popleft()
                    consumer.outstanding[message.receipt] = message
                    got.append(message)
                if len(got) >= max_messages or consumer.cancelled:
                    break
                limit = _DRAIN_GAP_SECONDS if got else max(deadline - time.monotonic(), 0.0)
                consumer.channel.connection.process_data_events(time_limit=limit)
                if not consumer.buffer and (got or time.monotonic() >= deadline):
                    break
        if consumer.cancelled and not got:
            raise BrokerError(f"{what}: the broker cancelled the consumer (queue deleted?)")
        return got

    def _consumer(self, address: DlqAddress) -> _Consumer:
        """The channel that reads this DLQ, opened on first use and kept while it is open."""
        vhost = address.vhost or self.default_vhost()
        key = (vhost, address.name)
        connection = self._connection(vhost)  # first: a dead connection takes its consumers with it
        consumer = self._consumers.get(key)
        if consumer is not None and not consumer.channel.is_open:
            self._drop_consumer(key)
            consumer = None
        if consumer is None:
            what = f"queue {address.name!r} in vhost {vhost!r}"
            with self._guard(vhost, what, on_channel_error=lambda: None):
                consumer = _Consumer(channel=connection.channel())
                consumer.channel.add_on_cancel_callback(consumer.on_cancel)
            self._consumers[key] = consumer
        return consumer

    def _drop_consumer(self, key: tuple[str, str]) -> None:
        consumer = self._consumers.pop(key, None)
        if consumer is not None and consumer.channel.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                consumer.channel.close()

    def remove(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Ack these deliveries. Called only after their rows are committed (invariant 1). Every
        message must be one this adapter handed out and still holds: a stale delivery tag (after
        a reconnect) could name another message on the new channel, so it is refused instead."""
        self._settle(address, messages, ack=True)

    def release(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Nack with requeue: the broker delivers them again (with ``redelivered`` set). Stops the
        consumer first and requeues what it prefetched too, so that the released messages are
        back in the queue (not prefetched again at once) until the next ``receive``."""
        if not messages:
            return
        vhost = address.vhost or self.default_vhost()
        key = (vhost, address.name)
        consumer = self._holder(address, messages)
        # A channel error closes the channel: the broker then requeues everything it held.
        with self._guard(
            vhost, f"queue {address.name!r} in vhost {vhost!r}", on_channel_error=lambda: self._drop_consumer(key)
        ):
            consumer.stop()
        prefetched = list(consumer.buffer)
        consumer.buffer.clear()
        for message in prefetched:  # settled like handed-out messages, by delivery tag
            consumer.outstanding[message.receipt] = message
        self._settle(address, [*messages, *prefetched], ack=False)

    def reject(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Reject without requeue, as a failing application does: the broker dead-letters each
        message through the queue's x-dead-letter-exchange (or drops it when the queue has none).
        Used by recovery drills' synthetic consumer, never by capture."""
        if not messages:
            return
        vhost = address.vhost or self.default_vhost()
        key = (vhost, address.name)
        consumer = self._holder(address, messages)
        with self._guard(
            vhost, f"queue {address.name!r} in vhost {vhost!r}", on_channel_error=lambda: self._drop_consumer(key)
        ):
            for message in messages:
                consumer.channel.basic_reject(delivery_tag=message.receipt, requeue=False)
        for message in messages:
            consumer.outstanding.pop(message.receipt, None)

    def ensure_dead_letter_pair(self, work: str, dlq: str, *, vhost: str = "") -> tuple[str, str, list[str]]:
        """Declare the durable queue ``dlq`` and the durable queue ``work`` whose rejected messages
        RabbitMQ dead-letters to it (default exchange, routing key ``dlq``), unless they exist:
        (work, dlq, names created now). An existing work queue declared otherwise is refused by
        the broker (PRECONDITION_FAILED), never changed. Used by recovery drills."""
        vhost = vhost or self.default_vhost()
        arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
        created = []
        for name, args in ((dlq, None), (work, arguments)):
            what = f"queue {name!r} in vhost {vhost!r}"
            if name == work:
                what += f" (it must dead-letter to {dlq!r} through the default exchange)"
            connection = self._connection(vhost)
            with self._guard(vhost, what, on_channel_error=lambda: None):
                channel = connection.channel()
                try:
                    channel.queue_declare(name, passive=True)
                    exists = True
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code != 404:
                        raise
                    channel, exists = connection.channel(), False
                if not exists or name == work:  # an existing work queue: the broker checks its arguments
                    channel.queue_declare(name, durable=True, arguments=args)
                channel.close()
            if not exists:
                created.append(name)
        return work, dlq, created

    def _holder(self, address: DlqAddress, messages: list[ReceivedMessage]) -> _Consumer:
        """The consumer holding every one of these messages. A stale delivery tag (after a
        reconnect) could name another message on the new channel, so it is refused instead."""
        vhost = address.vhost or self.default_vhost()
        consumer = self._consumers.get((vhost, address.name))
        held = consumer.outstanding if consumer is not None and consumer.channel.is_open else {}
        stale = [m.receipt for m in messages if held.get(m.receipt) != m]
        if consumer is None or stale:
            raise BrokerError(
                f"queue {address.name!r} in vhost {vhost!r}: {len(stale)} of {len(messages)} messages are not held "
                "by this adapter any more (channel closed or not received here); the broker redelivers them",
                permanent=True,
            )
        return consumer

    def _settle(self, address: DlqAddress, messages: list[ReceivedMessage], *, ack: bool) -> None:
        if not messages:
            return
        vhost = address.vhost or self.default_vhost()
        key = (vhost, address.name)
        what = f"queue {address.name!r} in vhost {vhost!r}"
        consumer = self._holder(address, messages)
        tags = sorted({m.receipt for m in messages})
        highest = tags[-1]
        unacked = set(consumer.outstanding) | {m.receipt for m in consumer.buffer}
        contiguous = len(tags) > 1 and len(tags) == sum(1 for tag in unacked if tag <= highest)
        channel = consumer.channel
        with self._guard(vhost, what, on_channel_error=lambda: self._drop_consumer(key)):
            if contiguous:
                _settle_one(channel, highest, ack=ack, multiple=True)
            else:
                for tag in tags:
                    _settle_one(channel, tag, ack=ack, multiple=False)
        for tag in tags:
            consumer.outstanding.pop(tag, None)

    # -- publishing ----------------------------------------------------------------------------

    def prepare_publish(self, target: Target) -> None:
        """Open the vhost's connection and its publisher channel in confirm mode."""
        vhost = target.vhost or self.default_vhost()
        self._publisher(vhost, f"publish to exchange {target.name!r} in vhost {vhost!r}")

    def publish(self, target: Target, messages: list[OutgoingMessage]) -> list[PublishResult]:
        """Publish persistent, mandatory messages with every publisher confirm in flight.

        A message is confirmed only when the broker acked it and did not return it (invariant 2).
        Raises BrokerError only when the batch cannot start (no connection or channel). Once
        messages are on the wire it returns one result per message, in order: a returned message
        says ``unroutable: NO_ROUTE``, a nack says so, a channel closed by the broker (e.g. a
        missing exchange: 404) or a lost connection fails every unresolved message with the
        broker's text, and a message without an answer within ``timeout`` seconds fails with
        ``no confirm within N s``. The adapter stays usable after any of these.
        """
        if not messages:
            return []
        vhost = target.vhost or self.default_vhost()
        what = f"publish to exchange {target.name!r} in vhost {vhost!r}"
        publisher = self._publisher(vhost, what)
        batch = _Batch(target=target, messages=messages)
        publisher.batch = batch
        try:
            self._publish_all(publisher, batch)
            self._await_confirms(publisher, batch)
        except (pika.exceptions.AMQPError, OSError) as exc:
            # Only the connection can fail here: channel trouble is seen through its close callback.
            batch.fail_unresolved(f"connection lost: {_describe(exc)}")
            self._forget_connection(vhost)
        finally:
            publisher.batch = None
        if publisher.closed_reason:
            self._publishers.pop(vhost, None)
        elif batch.pending:
            batch.fail_unresolved(f"no confirm within {self.timeout:g} s")
            # Late confirms for this batch must not meet the next one: start over on a new channel.
            self._publishers.pop(vhost, None)
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                publisher.channel._impl.close()  # noqa: SLF001 - do not wait for a broker that is not answering
        return batch.results()

    def _publisher(self, vhost: str, what: str) -> _Publisher:
        connection = self._connection(vhost)  # first: a dead connection takes its publisher with it
        publisher = self._publishers.get(vhost)
        if publisher is not None and publisher.channel.is_open and not publisher.closed_reason:
            return publisher
        self._publishers.pop(vhost, None)
        with self._guard(vhost, what, on_channel_error=lambda: None):
            publisher = _Publisher(connection.channel())
            deadline = time.monotonic() + self.timeout
            while not publisher.select_ok:
                if publisher.closed_reason or time.monotonic() >= deadline:
                    with contextlib.suppress(pika.exceptions.AMQPError):
                        publisher.channel._impl.close()  # noqa: SLF001 - do not wait for a silent broker
                    raise BrokerError(f"{what}: confirm mode refused: {publisher.closed_reason or 'no answer'}")
                connection.process_data_events(time_limit=_CONFIRM_POLL_SECONDS)
        self._publishers[vhost] = publisher
        return publisher

    def _publish_all(self, publisher: _Publisher, batch: _Batch) -> None:
        connection = publisher.channel.connection
        impl = publisher.channel._impl  # noqa: SLF001 - confirms pipelined on the impl channel, see module doc
        since_pump, bytes_since_pump = 0, 0
        for index, message in enumerate(batch.messages):
            if publisher.closed_reason:
                batch.fail(index, publisher.closed_reason)
                continue
            try:
                properties = _basic_properties(message)
                impl.basic_publish(
                    batch.target.name, batch.target.routing_key, message.body, properties, mandatory=True
                )
            except pika.exceptions.AMQPChannelError as exc:  # channel closing: broker error on its way
                batch.fail(index, publisher.closed_reason or _describe(exc))
                continue
            except (pika.exceptions.AMQPConnectionError, OSError):
                raise
            except Exception as exc:  # encoding a property or header; marshalled before any write
                batch.fail(index, f"cannot encode message: {_describe(exc)}")
                continue
            batch.sent(index, publisher.take_tag())
            since_pump += 1
            bytes_since_pump += len(message.body)
            if since_pump >= _PUMP_EVERY_MESSAGES or bytes_since_pump >= _PUMP_EVERY_BYTES:
                connection.process_data_events(0)
                since_pump, bytes_since_pump = 0, 0

    def _await_confirms(self, publisher: _Publisher, batch: _Batch) -> None:
        connection = publisher.channel.connection
        deadline = time.monotonic() + self.timeout
        while batch.pending and not publisher.closed_reason and time.monotonic() < deadline:
            connection.process_data_events(time_limit=_CONFIRM_POLL_SECONDS)
        if publisher.closed_reason:
            batch.fail_unresolved(publisher.closed_reason)

    # -- discovery -----------------------------------------------------------------------------

    def list_candidates(self) -> list[Candidate]:
        """Queues that look like DLQs by name, or that receive other queues' dead letters (queue
        arguments or policy ``dead-letter-exchange`` resolved through the DLX's bindings)."""
        queues = self._management_get("/api/queues?columns=name,vhost,arguments,messages,effective_policy_definition")
        fed: dict[tuple[str, str], set[str]] = {}
        routes = _DeadLetterRoutes(self._management_get)
        for queue in queues or []:
            dlx, routing_key = _dead_letter_settings(queue)
            if dlx is None:
                continue
            vhost = queue.get("vhost", "/")
            for target in routes.queues(vhost, dlx, routing_key):
                if target != queue["name"]:
                    fed.setdefault((vhost, target), set()).add(queue["name"])
        candidates = []
        for queue in queues or []:
            vhost, name = queue.get("vhost", "/"), queue["name"]
            sources = tuple(sorted(fed.get((vhost, name), ())))
            by_name = bool(_DLQ_NAME.search(name))
            if not sources and not by_name:
                continue
            hint = f"dead letters from {', '.join(sources)}" if sources else "name looks like a DLQ"
            depth = queue.get("messages")
            candidates.append(
                Candidate(
                    address=DlqAddress(name=name, vhost=vhost),
                    sources=sources,
                    depth=depth if isinstance(depth, int) else None,
                    hint=hint,
                )
            )
        return sorted(candidates, key=lambda c: (c.address.vhost, c.address.name))

    def retention_seconds(self, address: DlqAddress) -> int | None:
        """The queue's message TTL: its ``x-message-ttl`` argument, else its policy's
        ``message-ttl`` (milliseconds). None without a TTL or without the management API."""
        if not (self.broker.options or {}).get("management_url"):
            return None
        vhost = address.vhost or self.default_vhost()
        queue = self._management_get(f"/api/queues/{quote(vhost, safe='')}/{quote(address.name, safe='')}",
                                     missing_ok=True)  # fmt: skip
        if not isinstance(queue, dict):
            return None
        ttl = (queue.get("arguments") or {}).get("x-message-ttl")
        if ttl is None:
            ttl = (queue.get("effective_policy_definition") or {}).get("message-ttl")
        return int(ttl) // 1000 if isinstance(ttl, int) and ttl >= 0 else None

    def _management_get(self, path: str, *, missing_ok: bool = False) -> Any:
        """GET one management API resource as JSON with basic auth from the credentials
        reference; a 404 gives None when ``missing_ok``. Errors never carry the secret."""
        base = str((self.broker.options or {}).get("management_url") or "").rstrip("/")
        if not base:
            raise BrokerError(
                "listing RabbitMQ DLQs needs options.management_url (the management HTTP API, e.g. http://host:15672)",
                permanent=True,
            )
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https"):
            raise BrokerError("options.management_url must be an http:// or https:// URL", permanent=True)
        where = f"management API at {parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        request = urllib.request.Request(base + path, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked
        creds = resolve_credentials(self.broker.credentials_ref, ("username", "password"))
        if creds:
            token = base64.b64encode(f"{creds.get('username', '')}:{creds.get('password', '')}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        for attempt in (1, 2):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - scheme checked
                    return json.load(response)
            except urllib.error.HTTPError as exc:
                if exc.code == 404 and missing_ok:
                    return None
                # RabbitMQ answers 500 (badkey) when a queue is deleted while it lists queues: once more.
                if exc.code >= 500 and attempt == 1:
                    continue
                raise BrokerError(
                    f"{where}: HTTP {exc.code} {exc.reason} for {path.split('?')[0]}", permanent=exc.code in (401, 403)
                ) from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                raise BrokerError(f"{where}: {reason}") from None
        raise AssertionError("unreachable: the second attempt returns or raises")


# -- consuming state ----------------------------------------------------------------------------


@dataclass(eq=False)
class _Consumer:
    """One DLQ's channel and its consumer (from the first receive until release or close).
    ``buffer`` holds deliveries not yet handed out, ``outstanding`` those handed out and not yet
    acked/nacked (by delivery tag)."""

    channel: BlockingChannel
    tag: str = ""
    prefetch: int = 0
    cancelled: bool = False
    buffer: deque[ReceivedMessage] = field(default_factory=deque)
    outstanding: dict[int, ReceivedMessage] = field(default_factory=dict)

    def ensure_started(self, queue: str, *, prefetch: int) -> None:
        """Start consuming unless a consumer runs already (its prefetch then stays as it is)."""
        if self.tag and not self.cancelled:
            return
        if prefetch != self.prefetch:  # applies to consumers started after it
            self.channel.basic_qos(prefetch_count=prefetch)
            self.prefetch = prefetch
        self.cancelled = False
        self.tag = self.channel.basic_consume(queue, on_message_callback=self.on_message, auto_ack=False)

    def stop(self) -> None:
        """Cancel the consumer. Deliveries pika read but did not dispatch are requeued by pika;
        those in ``buffer`` or handed out stay unacked on the channel, so their tags remain
        valid (the caller settles them)."""
        if self.tag and not self.cancelled:  # a broker cancel already removed it
            self.channel.basic_cancel(self.tag)
        self.tag = ""

    def on_message(
        self, _channel: Any, method: pika.spec.Basic.Deliver, properties: pika.spec.BasicProperties, body: bytes
    ) -> None:
        self.buffer.append(_received(method, properties, body))

    def on_cancel(self, _frame: Any) -> None:
        self.cancelled = True


def _received(method: pika.spec.Basic.Deliver, properties: pika.spec.BasicProperties, body: bytes) -> ReceivedMessage:
    """A delivery as plain JSON-safe data (invariant 10: hostile headers never crash)."""
    props: dict[str, Any] = {}
    for name in _RECEIVED_PROPERTIES:
        value = getattr(properties, name, None)
        if value is not None:
            props[name] = int(value) if name == "timestamp" else value
    props["exchange"] = method.exchange
    props["routing_key"] = method.routing_key
    props["redelivered"] = bool(method.redelivered)
    identity = properties.message_id or ""
    if isinstance(identity, bytes):
        identity = identity.decode("utf-8", "replace")
    return ReceivedMessage(
        identity=str(identity),
        body=bytes(body),
        headers=_json_safe_table(properties.headers or {}),
        properties=_json_safe_table(props),
        receipt=method.delivery_tag,
    )


def _json_safe_table(table: dict[Any, Any]) -> Any:
    """``json_safe(table)``, with the common cases (text names; text, int, bool or no value)
    done inline: it runs for every delivery. Anything else goes through json_safe itself, so
    hostile values are handled exactly as before (invariant 10)."""
    if table.__class__ is not dict:
        return json_safe(table)
    safe = {}
    for name, value in table.items():
        if name.__class__ is not str or "\x00" in name:
            name = str(json_safe(name))
        kind = value.__class__
        if kind is str:
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
        elif value is not None and kind is not int and kind is not bool:
            value = json_safe(value)
        safe[name] = value
    return safe


def _settle_one(channel: BlockingChannel, tag: int, *, ack: bool, multiple: bool) -> None:
    if ack:
        channel.basic_ack(delivery_tag=tag, multiple=multiple)
    else:
        channel.basic_nack(delivery_tag=tag, multiple=multiple, requeue=True)


# -- publishing state ---------------------------------------------------------------------------


class _Publisher:
    """A confirm-mode channel. Ack/Nack/Return callbacks are registered on the impl channel so
    they fire while the connection is polled, without BlockingChannel's one-at-a-time wait."""

    def __init__(self, channel: BlockingChannel) -> None:
        self.channel = channel
        self.batch: _Batch | None = None
        self.select_ok = False
        self.closed_reason = ""
        self._next_tag = 1
        impl = channel._impl  # noqa: SLF001 - see module doc
        impl.add_on_close_callback(self._on_close)
        impl.add_on_return_callback(self._on_return)
        impl.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_select_ok)

    def take_tag(self) -> int:
        """Delivery tags count publishes on the channel from 1 once confirm mode is on."""
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        return tag

    def _on_select_ok(self, _frame: Any) -> None:
        self.select_ok = True

    def _on_confirm(self, frame: Any) -> None:
        if self.batch is not None:
            method = frame.method
            acked = isinstance(method, pika.spec.Basic.Ack)
            self.batch.confirm(method.delivery_tag, multiple=bool(method.multiple), acked=acked)

    def _on_return(
        self, _channel: Any, method: pika.spec.Basic.Return, properties: pika.spec.BasicProperties, body: bytes
    ) -> None:
        if self.batch is not None:
            self.batch.returned(method, properties, body)

    def _on_close(self, _channel: Any, reason: Exception) -> None:
        self.closed_reason = f"channel closed by broker: {_describe(reason)}"


class _Batch:
    """Outcome bookkeeping for one publish call (invariant 2).

    ``pending`` maps an unresolved delivery tag to the message's index. A Basic.Return carries no
    delivery tag; RabbitMQ sends it before the ack of the same message, so it is matched to the
    unresolved messages with the same exchange, routing key, message id and body. Every such
    match is marked returned: with identical duplicates in flight this may fail a message that
    was routed (a harmless re-publish), but never confirms one that was not.
    """

    def __init__(self, target: Target, messages: list[OutgoingMessage]) -> None:
        self.target = target
        self.messages = messages
        self.outcome: list[str | None] = [None] * len(messages)  # None: unresolved, "": confirmed
        self.pending: dict[int, int] = {}
        self.lowest_pending = 1  # no unresolved tag is below this one
        self.highest_sent = 0
        self._returned: dict[int, str] = {}
        self._by_content: dict[tuple[str, str, str, bytes], list[int]] | None = None

    def sent(self, index: int, tag: int) -> None:
        if not self.pending:
            self.lowest_pending = tag
        self.pending[tag] = index
        self.highest_sent = tag
        if self._by_content is not None:
            self._by_content.setdefault(self._content_key(index), []).append(tag)

    def fail(self, index: int, error: str) -> None:
        self.outcome[index] = error or "not published"

    def fail_unresolved(self, error: str) -> None:
        for index, outcome in enumerate(self.outcome):
            if outcome is None:
                self.outcome[index] = error
        self.pending.clear()

    def confirm(self, tag: int, *, multiple: bool, acked: bool) -> None:
        tags = range(self.lowest_pending, tag + 1) if multiple else (tag,)
        for each in tags:
            index = self.pending.pop(each, None)
            if index is None:
                continue
            returned = self._returned.pop(each, "")
            self.outcome[index] = returned if acked else (returned or "nacked by broker")
        while self.lowest_pending <= self.highest_sent and self.lowest_pending not in self.pending:
            self.lowest_pending += 1

    def returned(self, method: pika.spec.Basic.Return, properties: pika.spec.BasicProperties, body: bytes) -> None:
        if self._by_content is None:
            self._by_content = {}
            for tag, index in self.pending.items():
                self._by_content.setdefault(self._content_key(index), []).append(tag)
        key = (method.exchange, method.routing_key, _text(properties.message_id), bytes(body))
        reason = f"unroutable: {method.reply_text or method.reply_code}"
        for tag in self._by_content.get(key, ()):
            if tag in self.pending:
                self._returned[tag] = reason

    def _content_key(self, index: int) -> tuple[str, str, str, bytes]:
        message = self.messages[index]
        message_id = (message.properties or {}).get("message_id")
        return (self.target.name, self.target.routing_key, _text(message_id), bytes(message.body))

    def results(self) -> list[PublishResult]:
        results = []
        for index, outcome in enumerate(self.outcome):
            message_id = _text((self.messages[index].properties or {}).get("message_id"))
            error = "not published" if outcome is None else outcome
            results.append(PublishResult(index=index, confirmed=error == "", error=error, broker_message_id=message_id))
        return results


def _basic_properties(message: OutgoingMessage) -> pika.BasicProperties:
    """Persistent AMQP properties from an OutgoingMessage; headers made encodable by pika."""
    given = message.properties or {}
    kwargs: dict[str, Any] = {
        name: _text(given[name]) for name in _PUBLISHED_PROPERTIES if given.get(name) not in (None, "")
    }
    if given.get("priority") not in (None, ""):
        kwargs["priority"] = int(given["priority"])
    timestamp = given.get("timestamp")
    if isinstance(timestamp, datetime):
        kwargs["timestamp"] = int(timestamp.timestamp())
    elif isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
        kwargs["timestamp"] = int(timestamp)
    elif isinstance(timestamp, str) and timestamp:
        kwargs["timestamp"] = int(datetime.fromisoformat(timestamp).timestamp())
    headers = {str(k): _amqp_value(v) for k, v in (message.headers or {}).items()}
    return pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, headers=headers or None, **kwargs)


def _amqp_value(value: Any) -> Any:
    """A header value pika can encode: AMQP has no float in pika's encoder, so floats (and
    anything unknown) travel as text; tuples become arrays; huge ints become text."""
    if value is None or isinstance(value, str | bytes | bool | Decimal | datetime):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _amqp_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_amqp_value(v) for v in value]
    return str(value)


# -- discovery helpers --------------------------------------------------------------------------


def _dead_letter_settings(queue: dict[str, Any]) -> tuple[str | None, str | None]:
    """(dead-letter exchange, routing key) from queue arguments, else from the effective policy."""
    arguments = queue.get("arguments") or {}
    policy = queue.get("effective_policy_definition") or {}
    if not isinstance(policy, dict):  # the API gives [] when there is no policy
        policy = {}
    dlx = arguments.get("x-dead-letter-exchange", policy.get("dead-letter-exchange"))
    routing_key = arguments.get("x-dead-letter-routing-key", policy.get("dead-letter-routing-key"))
    return (None if dlx is None else str(dlx)), (None if routing_key is None else str(routing_key))


class _DeadLetterRoutes:
    """Resolves where a dead-letter exchange sends messages, one API call per exchange."""

    def __init__(self, get: Callable[..., Any]) -> None:
        self._get = get
        self._exchanges: dict[tuple[str, str], tuple[str, list[dict[str, Any]]]] = {}

    def queues(self, vhost: str, exchange: str, routing_key: str | None, depth: int = 0) -> set[str]:
        """Queue names reached from ``exchange``. Without a dead-letter routing key the message
        keeps its original key, which is unknown here: every bound queue counts."""
        if exchange == "":
            return {routing_key} if routing_key else set()
        kind, bindings = self._exchange(vhost, exchange)
        found: set[str] = set()
        for binding in bindings:
            if routing_key is not None and not _binding_matches(kind, binding.get("routing_key", ""), routing_key):
                continue
            destination = binding.get("destination", "")
            if binding.get("destination_type") == "queue":
                found.add(destination)
            elif binding.get("destination_type") == "exchange" and depth < 3 and destination != exchange:
                found |= self.queues(vhost, destination, routing_key, depth + 1)
        return found

    def _exchange(self, vhost: str, exchange: str) -> tuple[str, list[dict[str, Any]]]:
        key = (vhost, exchange)
        if key not in self._exchanges:
            path = f"/api/exchanges/{quote(vhost, safe='')}/{quote(exchange, safe='')}"
            described = self._get(path, missing_ok=True) or {}
            bindings = self._get(f"{path}/bindings/source", missing_ok=True) or []
            self._exchanges[key] = (str(described.get("type", "")), list(bindings))
        return self._exchanges[key]


def _binding_matches(kind: str, pattern: str, routing_key: str) -> bool:
    if kind == "direct":
        return pattern == routing_key
    if kind == "topic":
        return _topic_matches(pattern.split("."), routing_key.split("."))
    return True  # fanout, headers and plugin types: assume it routes


def _topic_matches(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_matches(rest, words[i:]) for i in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _topic_matches(rest, words[1:])


# -- errors -------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _describe(exc: BaseException) -> str:
    """The broker's words for an exception (pika exceptions carry reply code and text)."""
    code, text = getattr(exc, "reply_code", None), getattr(exc, "reply_text", None)
    if code is not None and text is not None:
        return f"{code} {text}"
    return str(exc) or type(exc).__name__


def _channel_error(exc: pika.exceptions.AMQPChannelError, what: str) -> BrokerError:
    code = getattr(exc, "reply_code", None)
    return BrokerError(f"{what}: {_describe(exc)}", permanent=code in _PERMANENT_REPLY_CODES)


def _connect_error(exc: BaseException, params: pika.ConnectionParameters) -> BrokerError:
    """Why a connection could not open; refused credentials or vhost are permanent."""
    where = f"{params.host}:{params.port}"
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError | pika.exceptions.AuthenticationError):
        return BrokerError(f"authentication refused by {where}: {exc}", permanent=True)
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return BrokerError(f"access to vhost {params.virtual_host!r} refused by {where}: {exc}", permanent=True)
    if isinstance(exc, pika.exceptions.ConnectionClosedByBroker):
        return BrokerError(f"{where} closed the connection: {_describe(exc)}", permanent=exc.reply_code in (403, 530))
    if isinstance(exc, pika.exceptions.AMQPError):
        return BrokerError(f"cannot connect to {where}: {exc!r}")
    return BrokerError(f"cannot connect to {where}: {exc}")
