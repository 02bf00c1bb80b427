"""Failure metadata normalisation (recovery.metadata) on the header shapes brokers and frameworks
really write, passed through ``json_safe`` as the adapters hand them over; and a hostile table
for invariant 10: ``normalise`` never raises and always returns bounded, storable values."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.brokers.base import json_safe
from recovery.metadata import (
    MAX_ATTEMPTS,
    MAX_ENVELOPE_BODY,
    MAX_ERROR_CLASS,
    MAX_ERROR_MESSAGE,
    MAX_ORIGIN,
    MAX_REASON,
    MAX_SOURCE_MESSAGE_ID,
    MAX_STACK_TRACE,
    Failure,
    normalise,
)

T0 = datetime(2025, 11, 21, 20, 1, 2, tzinfo=UTC)
T0_MS = 1763755262000
TASK_ID = "7c6a4e1e-3f0b-4a59-9a8e-2b1d6c0f5e11"
JAVA_STACK = (
    "java.lang.IllegalStateException: no stock for sku 77\n"
    "\tat com.example.orders.OrderListener.onOrder(OrderListener.java:42)\n"
    "\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)\n"
)


def amqp_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """AMQP headers as pika decodes them (timestamps are naive UTC datetimes) and json_safe stores them."""
    return json_safe(headers)


def kafka_headers(*pairs: tuple[str, bytes]) -> dict[str, Any]:
    """Kafka headers as the adapter hands them over: bytes through json_safe, a repeated key as a list."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        value = json_safe(value)
        if name not in out:
            out[name] = value
        elif isinstance(out[name], list):
            out[name].append(value)
        else:
            out[name] = [out[name], value]
    return out


def sqs_attrs(**values: str) -> dict[str, Any]:
    return {name.replace("_", "-"): {"DataType": "String", "StringValue": value} for name, value in values.items()}


def assert_has(failure: Failure, expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if name == "extras":
            for key, extra in value.items():
                assert failure.extras.get(key) == extra, f"extras[{key!r}]"
        else:
            assert getattr(failure, name) == value, name


def assert_sane(failure: Failure) -> None:
    """What every caller may rely on, whatever came in (invariant 10)."""
    limits = {
        "origin": MAX_ORIGIN,
        "reason": MAX_REASON,
        "error_class": MAX_ERROR_CLASS,
        "error_message": MAX_ERROR_MESSAGE,
        "stack_trace": MAX_STACK_TRACE,
        "source_message_id": MAX_SOURCE_MESSAGE_ID,
    }
    for name, limit in limits.items():
        value = getattr(failure, name)
        assert isinstance(value, str) and len(value) <= limit, name
        assert "\x00" not in value, name
        value.encode("utf-8")  # no lone surrogates: PostgreSQL must accept it
    assert failure.attempt_count is None or (
        type(failure.attempt_count) is int and 0 <= failure.attempt_count <= MAX_ATTEMPTS
    )
    for when in (failure.first_failed_at, failure.last_failed_at):
        assert when is None or (isinstance(when, datetime) and when.utcoffset() is not None and not when.utcoffset())
    dumped = json.dumps(failure.extras, allow_nan=False)
    assert "\\u0000" not in dumped
    dumped.encode("utf-8")


# --- RabbitMQ -------------------------------------------------------------------------------

REJECTED = {
    "x-death": [
        {
            "count": 1,
            "reason": "rejected",
            "queue": "orders.work",
            "time": datetime(2025, 11, 21, 20, 1, 2),
            "exchange": "orders",
            "routing-keys": ["order.created"],
        }
    ],
    "x-first-death-exchange": "orders",
    "x-first-death-queue": "orders.work",
    "x-first-death-reason": "rejected",
}
ORDERS_ORIGIN = "rabbitmq:exchange=orders routing_key=order.created queue=orders.work"


@pytest.mark.parametrize(
    ("headers", "properties", "expected"),
    [
        pytest.param(
            REJECTED,
            {"message_id": "ord-1001", "timestamp": 1763755200, "content_type": "application/json", "delivery_mode": 2},
            {
                "origin": ORDERS_ORIGIN,
                "reason": "rejected",
                "attempt_count": 1,
                "first_failed_at": T0,
                "last_failed_at": T0,
                "source_message_id": "ord-1001",
                "error_class": "",
            },
            id="rabbitmq-3.10-after-reject",
        ),
        pytest.param(
            {
                **REJECTED,
                "x-last-death-exchange": "orders",
                "x-last-death-queue": "orders.work",
                "x-last-death-reason": "rejected",
            },
            {},
            {"origin": ORDERS_ORIGIN, "reason": "rejected", "attempt_count": 1, "source_message_id": ""},
            id="rabbitmq-3.13-with-x-last-death",
        ),
        pytest.param(
            {
                "x-death": [
                    {
                        "count": 1,
                        "reason": "expired",
                        "queue": "orders.delay",
                        "time": datetime(2025, 11, 21, 20, 1, 2),
                        "exchange": "",
                        "routing-keys": ["orders.delay"],
                        "original-expiration": "60000",
                    }
                ],
                "x-first-death-exchange": "",
                "x-first-death-queue": "orders.delay",
                "x-first-death-reason": "expired",
            },
            {"message_id": "ord-1002"},
            {
                "origin": "rabbitmq:exchange=(default) routing_key=orders.delay queue=orders.delay",
                "reason": "expired",
                "attempt_count": 1,
                "last_failed_at": T0,
                "extras": {"original_expiration": "60000"},
            },
            id="after-ttl-expiry",
        ),
        pytest.param(
            {
                # Retry loop: rejected on orders.work, parked in orders.retry until its TTL,
                # back to orders.work; the entry updated last comes first.
                "x-death": [
                    {
                        "count": 3,
                        "reason": "rejected",
                        "queue": "orders.work",
                        "time": datetime(2025, 11, 21, 20, 5, 0),
                        "exchange": "orders",
                        "routing-keys": ["order.created"],
                    },
                    {
                        "count": 2,
                        "reason": "expired",
                        "queue": "orders.retry",
                        "time": datetime(2025, 11, 21, 20, 4, 30),
                        "exchange": "orders.retry",
                        "routing-keys": ["order.created"],
                        "original-expiration": "30000",
                    },
                ],
                "x-first-death-exchange": "orders",
                "x-first-death-queue": "orders.work",
                "x-first-death-reason": "rejected",
            },
            {"message_id": "ord-1003"},
            {
                "origin": ORDERS_ORIGIN,
                "reason": "rejected",
                "attempt_count": 5,
                "first_failed_at": datetime(2025, 11, 21, 20, 4, 30, tzinfo=UTC),
                "last_failed_at": datetime(2025, 11, 21, 20, 5, 0, tzinfo=UTC),
                "extras": {
                    "deaths": [
                        {"queue": "orders.work", "reason": "rejected", "count": 3, "time": "2025-11-21T20:05:00+00:00"},
                        {"queue": "orders.retry", "reason": "expired", "count": 2, "time": "2025-11-21T20:04:30+00:00"},
                    ],
                    "original_expiration": "30000",
                },
            },
            id="after-two-deaths-on-different-queues",
        ),
        pytest.param(
            {
                "x-death": [
                    {
                        "count": 1,
                        "reason": "delivery_limit",
                        "queue": "orders.quorum",
                        "time": datetime(2025, 11, 21, 20, 1, 2),
                        "exchange": "orders",
                        "routing-keys": ["order.created", "audit.order"],
                    }
                ],
                "x-first-death-exchange": "orders",
                "x-first-death-queue": "orders.quorum",
                "x-first-death-reason": "delivery_limit",
                "x-delivery-count": 20,
            },
            {},
            {
                "origin": "rabbitmq:exchange=orders routing_key=order.created,audit.order queue=orders.quorum",
                "reason": "delivery_limit",
                "attempt_count": 1,
                "extras": {"delivery_count": 20},
            },
            id="quorum-queue-delivery-limit",
        ),
        pytest.param(
            {"x-death": [{"count": 2, "reason": "maxlen", "queue": "orders.bounded", "time": T0_MS // 1000}]},
            {},
            {"origin": "rabbitmq:queue=orders.bounded", "reason": "maxlen", "attempt_count": 2, "last_failed_at": T0},
            id="x-death-without-x-first-death-headers",
        ),
    ],
)
def test_it_reads_the_first_death_from_x_death(
    headers: dict[str, Any], properties: dict[str, Any], expected: dict[str, Any]
) -> None:
    failure = normalise("rabbitmq", amqp_headers(headers), json_safe(properties))
    assert_has(failure, expected)
    assert_sane(failure)


# --- SQS ------------------------------------------------------------------------------------

SOURCE_ARN = "arn:aws:sqs:us-east-1:000000000000:orders-work"
SQS_SYSTEM = {
    "ApproximateReceiveCount": "6",
    "SentTimestamp": str(T0_MS - 60_000),
    "ApproximateFirstReceiveTimestamp": str(T0_MS),
    "SenderId": "AIDAEXAMPLEEXAMPLE",
    "MessageGroupId": "customer-42",
    "AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
    "queue_url": "http://localhost:4566/000000000000/orders-dlq",
    "md5_of_body": "4a6e0b5f1c0a1f6c6b1c7d9e0f1a2b3c",
}


@pytest.mark.parametrize(
    ("attributes", "properties", "sources", "expected"),
    [
        pytest.param(
            sqs_attrs(tenant="acme"),
            {**SQS_SYSTEM, "DeadLetterQueueSourceArn": SOURCE_ARN},
            (),
            {
                "origin": f"sqs:{SOURCE_ARN}",
                "reason": "maxReceiveCount exceeded",
                "attempt_count": 6,
                "first_failed_at": T0,
                "source_message_id": "",
                "extras": {"sent_at": "2025-11-21T20:00:02+00:00", "message_group_id": "customer-42"},
            },
            id="with-dead-letter-queue-source-arn",
        ),
        pytest.param(
            {
                "x-original-message-id": {"DataType": "String", "StringValue": "b7c1d2e3-0000-4000-8000-000000000001"},
                "priority": {"DataType": "Number", "StringValue": "42"},
            },
            SQS_SYSTEM,
            ("http://localhost:4566/000000000000/orders-work",),
            {
                "origin": "sqs:http://localhost:4566/000000000000/orders-work",
                "reason": "maxReceiveCount exceeded",
                "source_message_id": "b7c1d2e3-0000-4000-8000-000000000001",
            },
            id="without-source-arn-and-one-redrive-source",
        ),
        pytest.param(
            {},
            SQS_SYSTEM,
            (SOURCE_ARN, "arn:aws:sqs:us-east-1:000000000000:payments-work"),
            {
                "origin": "",
                "reason": "maxReceiveCount exceeded",
                "extras": {"possible_sources": [SOURCE_ARN, "arn:aws:sqs:us-east-1:000000000000:payments-work"]},
            },
            id="without-source-arn-and-two-redrive-sources",
        ),
        pytest.param(
            {},
            {**SQS_SYSTEM, "DeadLetterQueueSourceArn": SOURCE_ARN},
            ("arn:aws:sqs:us-east-1:000000000000:payments-work", "arn:aws:sqs:us-east-1:000000000000:other"),
            {"origin": f"sqs:{SOURCE_ARN}", "extras": {"possible_sources": None}},
            id="the-source-arn-wins-over-redrive-sources",
        ),
        pytest.param(
            {}, SQS_SYSTEM, (), {"origin": "", "reason": "", "attempt_count": 6}, id="without-any-redrive-information"
        ),
    ],
)
def test_it_reads_sqs_redrive_attributes(
    attributes: dict[str, Any], properties: dict[str, Any], sources: tuple[str, ...], expected: dict[str, Any]
) -> None:
    failure = normalise("sqs", attributes, properties, body=b'{"order": 1001}', dlq_sources=sources)
    assert_has(failure, expected)
    assert_sane(failure)


# --- Kafka ----------------------------------------------------------------------------------

KAFKA_RECORD = {"topic": "orders.dlq", "partition": 0, "offset": 7, "timestamp": T0_MS, "key": "order-1001"}
CONNECT = (
    ("__connect.errors.topic", b"orders"),
    ("__connect.errors.partition", b"0"),
    ("__connect.errors.offset", b"42"),
    ("__connect.errors.connector.name", b"orders-jdbc-sink"),
    ("__connect.errors.task.id", b"0"),
    ("__connect.errors.stage", b"VALUE_CONVERTER"),
    ("__connect.errors.class.name", b"org.apache.kafka.connect.json.JsonConverter"),
    ("__connect.errors.exception.class.name", b"org.apache.kafka.connect.errors.DataException"),
    (
        "__connect.errors.exception.message",
        b"Converting byte[] to Kafka Connect data failed due to serialization error: ",
    ),
    (
        "__connect.errors.exception.stacktrace",
        b"org.apache.kafka.connect.errors.DataException: Converting byte[] to Kafka Connect data failed\n"
        b"\tat org.apache.kafka.connect.json.JsonConverter.toConnectData(JsonConverter.java:324)\n",
    ),
)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(kafka_headers(*CONNECT), id="connect-dlq-context-headers"),
        pytest.param(
            kafka_headers(("__connect.errors.topic", b"stale"), *CONNECT), id="a-repeated-key-keeps-its-last-value"
        ),
    ],
)
def test_it_reads_kafka_connect_error_headers(headers: dict[str, Any]) -> None:
    failure = normalise("kafka", headers, KAFKA_RECORD)
    assert_has(
        failure,
        {
            "origin": "kafka:orders",
            "reason": "exception",
            "error_class": "org.apache.kafka.connect.errors.DataException",
            "error_message": "Converting byte[] to Kafka Connect data failed due to serialization error:",
            "source_message_id": "orders[0]@42",
            "last_failed_at": T0,
            "extras": {
                "connector": "orders-jdbc-sink",
                "connect_task_id": 0,
                "connect_stage": "VALUE_CONVERTER",
                "connect_class": "org.apache.kafka.connect.json.JsonConverter",
                "original_partition": 0,
                "original_offset": 42,
            },
        },
    )
    assert failure.stack_trace.startswith("org.apache.kafka.connect.errors.DataException")
    assert_sane(failure)


SPRING_ORIGINAL = (
    ("kafka_dlt-original-topic", b"orders"),
    ("kafka_dlt-original-partition", struct.pack(">i", 3)),
    ("kafka_dlt-original-offset", struct.pack(">q", 1_234_567)),
    ("kafka_dlt-original-timestamp", struct.pack(">q", T0_MS - 5_000)),
    ("kafka_dlt-original-timestamp-type", b"CreateTime"),
    ("kafka_dlt-original-consumer-group", b"orders-service"),
)
SPRING_EXCEPTION = (
    ("kafka_dlt-exception-fqcn", b"org.springframework.kafka.listener.ListenerExecutionFailedException"),
    ("kafka_dlt-exception-cause-fqcn", b"java.lang.IllegalStateException"),
    ("kafka_dlt-exception-message", b"Listener failed; no stock for sku 77"),
    ("kafka_dlt-exception-stacktrace", JAVA_STACK.encode()),
    ("__TypeId__", b"com.example.orders.OrderCreated"),
)
SPRING_EXPECTED = {
    "origin": "kafka:orders",
    "reason": "exception",
    "error_class": "org.springframework.kafka.listener.ListenerExecutionFailedException",
    "error_message": "Listener failed; no stock for sku 77",
    "stack_trace": JAVA_STACK.strip(),
    "source_message_id": "orders[3]@1234567",
    "last_failed_at": T0,
    "extras": {
        "original_topic": "orders",
        "original_partition": 3,
        "original_offset": 1_234_567,
        "original_timestamp": "2025-11-21T20:00:57+00:00",
        "original_timestamp_type": "CreateTime",
        "consumer_group": "orders-service",
        "exception_cause_class": "java.lang.IllegalStateException",
    },
}


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param((*SPRING_ORIGINAL, *SPRING_EXCEPTION), SPRING_EXPECTED, id="binary-ints-as-spring-writes-them"),
        pytest.param(
            (
                ("kafka_dlt-original-topic", b"orders"),
                ("kafka_dlt-original-partition", b"3"),
                ("kafka_dlt-original-offset", b"1234567"),
                *SPRING_EXCEPTION,
            ),
            {"source_message_id": "orders[3]@1234567", "extras": {"original_partition": 3}},
            id="ints-as-text-digits-from-other-producers",
        ),
        pytest.param(
            (
                ("kafka_dlt-original-topic", b"orders"),
                ("kafka_dlt-original-partition", struct.pack(">i", 0x01020304)),  # no NUL: arrives as text
                ("kafka_dlt-original-offset", struct.pack(">q", 9)),
            ),
            {"source_message_id": "orders[16909060]@9"},
            id="binary-int-without-nul-arrives-as-control-characters",
        ),
        pytest.param(
            (
                *SPRING_ORIGINAL,
                ("kafka_dlt-key-exception-fqcn", b"org.apache.kafka.common.errors.SerializationException"),
                ("kafka_dlt-key-exception-message", b"Can't deserialize key for partition orders-3 at offset 1234567"),
                ("kafka_dlt-key-exception-stacktrace", b"org.apache.kafka.common.errors.SerializationException: ..."),
            ),
            {
                "error_class": "org.apache.kafka.common.errors.SerializationException",
                "extras": {"key_error": True},
            },
            id="key-deserialization-exception",
        ),
        pytest.param(
            (
                ("kafka_original-topic", b"orders"),
                ("kafka_original-partition", struct.pack(">i", 1)),
                ("kafka_original-offset", struct.pack(">q", 5)),
                ("kafka_exception-fqcn", b"java.lang.RuntimeException"),
                ("kafka_exception-message", b"boom"),
            ),
            {"origin": "kafka:orders", "source_message_id": "orders[1]@5", "error_class": "java.lang.RuntimeException"},
            id="non-dlt-republish-headers",
        ),
        pytest.param(
            (*SPRING_ORIGINAL, *SPRING_EXCEPTION, ("retry_topic-attempts", struct.pack(">i", 4))),
            {"attempt_count": 4},
            id="retry-topic-attempts-as-int",
        ),
        pytest.param(
            (*SPRING_ORIGINAL, *SPRING_EXCEPTION, ("retry_topic-attempts", b"\x03")),
            {"attempt_count": 3},
            id="retry-topic-attempts-as-old-biginteger",
        ),
    ],
)
def test_it_decodes_spring_dead_letter_topic_headers(
    pairs: tuple[tuple[str, bytes], ...], expected: dict[str, Any]
) -> None:
    failure = normalise("kafka", kafka_headers(*pairs), KAFKA_RECORD)
    assert_has(failure, expected)
    assert_sane(failure)


def test_spring_binary_headers_really_arrive_as_base64() -> None:
    """Guards the fixtures above: json_safe turns Spring's big-endian ints into {"$base64": ...}."""
    headers = kafka_headers(*SPRING_ORIGINAL)
    assert headers["kafka_dlt-original-partition"] == {"$base64": base64.b64encode(struct.pack(">i", 3)).decode()}
    assert isinstance(headers["kafka_dlt-original-offset"], dict)


# --- Celery ---------------------------------------------------------------------------------

CELERY_HEADERS = {
    "lang": "py",
    "task": "app.tasks.charge",
    "id": TASK_ID,
    "shadow": None,
    "eta": None,
    "expires": "2025-11-21T21:00:00+00:00",
    "group": None,
    "group_index": None,
    "retries": 3,
    "timelimit": [None, None],
    "root_id": TASK_ID,
    "parent_id": None,
    "argsrepr": "(42,)",
    "kwargsrepr": "{'currency': 'EUR'}",
    "origin": "gen123@worker-1",
    "ignore_result": False,
    "stamped_headers": None,
    "stamps": {},
}
CELERY_EXPECTED = {
    "origin": "celery:app.tasks.charge",
    "attempt_count": 4,
    "extras": {
        "celery_task": "app.tasks.charge",
        "celery_id": TASK_ID,
        "retries": 3,
        "argsrepr": "(42,)",
        "kwargsrepr": "{'currency': 'EUR'}",
        "celery_origin": "gen123@worker-1",
        "expires": "2025-11-21T21:00:00+00:00",
    },
}


def kombu_envelope(headers: dict[str, Any]) -> bytes:
    """A Celery protocol 2 message as kombu's virtual transports (SQS, Kafka) serialise it."""
    inner = json.dumps([[42], {"currency": "EUR"}, {"callbacks": None, "errbacks": None, "chain": None}])
    return json.dumps(
        {
            "body": base64.b64encode(inner.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": TASK_ID,
                "reply_to": "0f3e1c2a-1111-3333-9999-5b6d7a8c9e0f",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "celery"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": "5d1f2a3b-4c5d-6e7f-8091-a2b3c4d5e6f7",
            },
        }
    ).encode()


@pytest.mark.parametrize(
    ("kind", "headers", "properties", "body", "expected"),
    [
        pytest.param(
            "rabbitmq",
            amqp_headers({**CELERY_HEADERS, **REJECTED}),
            {"correlation_id": TASK_ID, "content_type": "application/json", "content_encoding": "utf-8"},
            b'[[42], {"currency": "EUR"}, {}]',
            {
                **CELERY_EXPECTED,
                "reason": "rejected",
                "extras": {**CELERY_EXPECTED["extras"], "broker_origin": ORDERS_ORIGIN, "broker_attempt_count": 1},
            },
            id="amqp-headers-after-reject",
        ),
        pytest.param(
            "kafka",
            {},
            KAFKA_RECORD,
            kombu_envelope(CELERY_HEADERS),
            CELERY_EXPECTED,
            id="kombu-json-envelope-on-kafka",
        ),
        pytest.param(
            "sqs",
            {},
            {**SQS_SYSTEM, "DeadLetterQueueSourceArn": SOURCE_ARN},
            base64.b64encode(kombu_envelope(CELERY_HEADERS)),
            {
                **CELERY_EXPECTED,
                "reason": "maxReceiveCount exceeded",
                "extras": {"broker_origin": f"sqs:{SOURCE_ARN}", "broker_attempt_count": 6},
            },
            id="base64-kombu-envelope-on-sqs",
        ),
        pytest.param(
            "sqs",
            {},
            SQS_SYSTEM,
            kombu_envelope({**CELERY_HEADERS, "retries": 0}),
            {"origin": "celery:app.tasks.charge", "attempt_count": 1},
            id="first-attempt-without-retries",
        ),
    ],
)
def test_it_reads_celery_task_messages(
    kind: str, headers: dict[str, Any], properties: dict[str, Any], body: bytes, expected: dict[str, Any]
) -> None:
    failure = normalise(kind, headers, properties, body=body)
    assert_has(failure, expected)
    assert_sane(failure)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(kombu_envelope(CELERY_HEADERS) + b" " * MAX_ENVELOPE_BODY, id="above-the-size-limit"),
        pytest.param(b'{"order": 1001, "headers": {"task": "not-celery"}}', id="business-json-with-headers"),
        pytest.param(b"\xff\xfe\x00garbage", id="binary"),
        pytest.param(b'{"body": "x", "headers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="deeply-nested-json"),
        pytest.param(b"eyJ!!!not-base64", id="broken-base64"),
        pytest.param(b"[1, 2, 3]", id="json-list"),
    ],
)
def test_it_only_takes_celery_metadata_from_a_real_envelope_below_the_size_limit(body: bytes) -> None:
    failure = normalise("sqs", {}, {}, body=body)
    assert failure.origin == ""
    assert "celery_task" not in failure.extras
    assert_sane(failure)


# --- .NET frameworks and common application headers -----------------------------------------

MT_STACK = "   at Orders.ChargeConsumer.Consume(ConsumeContext`1 context) in /src/ChargeConsumer.cs:line 31"
NSB_STACK = "System.InvalidOperationException: Card declined\n   at Billing.ChargeHandler.Handle(Charge message)"


@pytest.mark.parametrize(
    ("kind", "headers", "expected"),
    [
        pytest.param(
            "rabbitmq",
            {
                "MT-Fault-ExceptionType": "System.TimeoutException",
                "MT-Fault-Message": "The operation has timed out.",
                "MT-Fault-StackTrace": MT_STACK,
                "MT-Fault-Timestamp": "2025-11-21T20:01:02.5080760Z",
                "MT-Fault-InputAddress": "rabbitmq://localhost/orders",
                "MT-Fault-ConsumerType": "Orders.ChargeConsumer",
                "MT-Fault-MessageType": "Orders.Contracts.Charge",
                "MT-Fault-RetryCount": 2,
                "MT-Reason": "fault",
                "MT-Host-MachineName": "worker-1",
            },
            {
                "origin": "masstransit:rabbitmq://localhost/orders",
                "reason": "fault",
                "error_class": "System.TimeoutException",
                "error_message": "The operation has timed out.",
                "stack_trace": MT_STACK.strip(),
                "attempt_count": 3,
                "last_failed_at": datetime(2025, 11, 21, 20, 1, 2, 508076, tzinfo=UTC),
                "extras": {"consumer_type": "Orders.ChargeConsumer", "message_type": "Orders.Contracts.Charge"},
            },
            id="masstransit-error-queue",
        ),
        pytest.param(
            "sqs",
            sqs_attrs(
                **{
                    "NServiceBus.ExceptionInfo.ExceptionType": "System.InvalidOperationException",
                    "NServiceBus.ExceptionInfo.Message": "Card declined",
                    "NServiceBus.ExceptionInfo.StackTrace": NSB_STACK,
                    "NServiceBus.FailedQ": "Billing",
                    "NServiceBus.TimeOfFailure": "2025-11-21 20:01:02:000462 Z",
                    "NServiceBus.ProcessingEndpoint": "Billing",
                    "NServiceBus.MessageId": "3e8d2a6c-77b1-4f3e-9d1a-ae5c00f1c0de",
                }
            ),
            {
                "origin": "nservicebus:Billing",
                "reason": "exception",
                "error_class": "System.InvalidOperationException",
                "error_message": "Card declined",
                "stack_trace": NSB_STACK,
                "last_failed_at": datetime(2025, 11, 21, 20, 1, 2, 462, tzinfo=UTC),
                "extras": {"processing_endpoint": "Billing"},
            },
            id="nservicebus-error-queue",
        ),
        pytest.param(
            "rabbitmq",
            {
                **REJECTED,
                "x-exception-message": "Listener threw exception",
                "x-exception-stacktrace": JAVA_STACK,
                "x-original-exchange": "orders",
                "x-original-routingKey": "order.created",
            },
            {
                "origin": "rabbitmq:exchange=orders routing_key=order.created",
                "reason": "rejected",  # the broker's reason wins over a framework's
                "error_message": "Listener threw exception",
                "stack_trace": JAVA_STACK.strip(),
            },
            id="spring-amqp-republish-recoverer",
        ),
        pytest.param(
            "kafka",
            kafka_headers(
                ("x-original-topic", b"orders"),
                ("x-original-partition", struct.pack(">i", 2)),
                ("x-original-offset", struct.pack(">q", 77)),
                ("x-exception-fqcn", b"org.springframework.messaging.MessageHandlingException"),
                ("x-exception-message", b"error occurred in message handler"),
            ),
            {
                "origin": "kafka:orders",
                "source_message_id": "orders[2]@77",
                "error_class": "org.springframework.messaging.MessageHandlingException",
                "reason": "exception",
            },
            id="spring-cloud-stream-kafka-binder",
        ),
        pytest.param(
            "sqs",
            sqs_attrs(**{"x-exception-class": "ValueError", "x-exception-message": "bad amount: -3"}),
            {"error_class": "ValueError", "error_message": "bad amount: -3", "reason": "exception"},
            id="x-exception-headers-as-sqs-attributes",
        ),
        pytest.param(
            "rabbitmq",
            {"X-Exception-Type": "TimeoutError"},
            {"error_class": "TimeoutError"},
            id="header-names-match-case-insensitively",
        ),
    ],
)
def test_it_reads_framework_and_application_exception_headers(
    kind: str, headers: dict[str, Any], expected: dict[str, Any]
) -> None:
    failure = normalise(kind, amqp_headers(headers), {})
    assert_has(failure, expected)
    assert_sane(failure)


# --- header_mapping -------------------------------------------------------------------------

MAPPED = {
    **REJECTED,
    "x-exception-class": "app.DetectedError",
    "x-my-error-class": "billing.CardDeclined",
    "x-my-error-message": "card 4242 declined",
    "x-my-stack": "Traceback (most recent call last): ...",
    "x-my-origin": "billing-service",
    "x-my-reason": "business-rule",
    "x-my-attempts": "7",
    "x-my-first": "2025-11-21T19:00:00Z",
    "x-my-last": T0_MS,
    "x-my-id": "pay-9",
    "x-bad-date": "yesterday",
}


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        pytest.param(
            {
                "error_class": "x-my-error-class",
                "error_message": "x-my-error-message",
                "stack_trace": "x-my-stack",
                "origin": "x-my-origin",
                "reason": "x-my-reason",
                "attempt_count": "x-my-attempts",
                "first_failed_at": "x-my-first",
                "last_failed_at": "x-my-last",
                "source_message_id": "x-my-id",
            },
            {
                "error_class": "billing.CardDeclined",
                "error_message": "card 4242 declined",
                "stack_trace": "Traceback (most recent call last): ...",
                "origin": "billing-service",
                "reason": "business-rule",
                "attempt_count": 7,
                "first_failed_at": datetime(2025, 11, 21, 19, 0, tzinfo=UTC),
                "last_failed_at": T0,
                "source_message_id": "pay-9",
            },
            id="every-field-parsed-to-its-type",
        ),
        pytest.param(
            {"error_class": "x-absent", "reason": ""},
            {"error_class": "app.DetectedError", "reason": "rejected"},
            id="a-missing-header-keeps-the-detected-value",
        ),
        pytest.param(
            {"last_failed_at": "x-bad-date", "attempt_count": "x-my-origin"},
            {"last_failed_at": T0, "attempt_count": 1},
            id="an-unparseable-value-keeps-the-detected-value",
        ),
        pytest.param(
            {"not_a_field": "x-my-origin", "extras": "x-my-origin", "origin": 42},
            {"origin": ORDERS_ORIGIN},
            id="unknown-fields-and-non-text-header-names-are-ignored",
        ),
    ],
)
def test_the_header_mapping_overrides_detected_values(mapping: dict[str, Any], expected: dict[str, Any]) -> None:
    failure = normalise("rabbitmq", amqp_headers(MAPPED), {}, header_mapping=mapping)
    assert_has(failure, expected)
    assert_sane(failure)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("2025-11-21T20:01:02Z", T0, id="iso-z"),
        pytest.param("2025-11-21T22:01:02+02:00", T0, id="iso-offset-converted-to-utc"),
        pytest.param("2025-11-21T20:01:02", T0, id="iso-naive-means-utc"),
        pytest.param("2025-11-21 20:01:02:000000 Z", T0, id="nservicebus-wire-format"),
        pytest.param(T0_MS // 1000, T0, id="epoch-seconds"),
        pytest.param(T0_MS, T0, id="epoch-milliseconds"),
        pytest.param(str(T0_MS), T0, id="epoch-milliseconds-as-text"),
        pytest.param(T0_MS * 1000, T0, id="epoch-microseconds"),
        pytest.param(float(T0_MS // 1000), T0, id="epoch-float-seconds"),
        pytest.param("yesterday", None, id="words"),
        pytest.param("2025-13-45T99:99:99Z", None, id="impossible-date"),
        pytest.param("0001-01-01T00:00:00+01:00", None, id="before-year-one-in-utc"),
        pytest.param(-1, None, id="negative-epoch"),
        pytest.param(0, None, id="zero-epoch"),
        pytest.param(10**30, None, id="enormous-epoch"),
        pytest.param(float("nan"), None, id="nan"),
        pytest.param(True, None, id="boolean"),
        pytest.param("2025-11-21T20:01:02Z" * 100, None, id="long-text"),
        pytest.param({"$base64": "!!!"}, None, id="invalid-base64"),
    ],
)
def test_it_reads_dates_as_aware_utc_or_none(value: Any, expected: datetime | None) -> None:
    failure = normalise("rabbitmq", {"x-when": value}, {}, header_mapping={"last_failed_at": "x-when"})
    assert failure.last_failed_at == expected
    assert_sane(failure)


# --- Hostile input (invariant 10) -------------------------------------------------------------

HUGE = "E" * 10_000_000
DEEP: Any = "bottom"
for _ in range(5000):
    DEEP = {"nested": [DEEP]}


@pytest.mark.parametrize(
    ("kind", "headers", "properties", "extra"),
    [
        pytest.param("rabbitmq", {"x-death": "garbage"}, {}, {}, id="x-death-not-a-list"),
        pytest.param("rabbitmq", {"x-death": [{}, {"count": 1}]}, {}, {}, id="x-death-entries-missing-fields"),
        pytest.param("rabbitmq", {"x-death": [1, None, "x", [], {"$base64": "AA=="}]}, {}, {}, id="x-death-non-dicts"),
        pytest.param(
            "rabbitmq",
            {"x-death": [{"count": "NaN", "time": "yesterday", "queue": 7, "routing-keys": "order.created"}]},
            {},
            {},
            id="x-death-count-nan-time-yesterday",
        ),
        pytest.param(
            "rabbitmq",
            {"x-death": [{"count": 10**30, "time": 10**30}, {"count": "9" * 5000}, {"count": -5}, {"count": True}]},
            {},
            {},
            id="x-death-huge-negative-and-boolean-counts",
        ),
        pytest.param(
            "rabbitmq",
            {"x-death": [{"count": 2, "time": "2025-11-21T20:01:02"}] * 100_000, "x-first-death-queue": ["q"]},
            {},
            {},
            id="x-death-with-100k-entries",
        ),
        pytest.param("rabbitmq", {"x-death": DEEP, "x-exception-message": DEEP}, {"message_id": DEEP}, {}, id="deep"),
        pytest.param("sqs", {"x-exception-message": HUGE, "x-exception-stacktrace": HUGE}, {}, {}, id="10-mb-message"),
        pytest.param(
            "kafka",
            {
                "kafka_dlt-exception-message": {"$base64": "!!!"},
                "kafka_dlt-original-topic": {"$base64": 42},
                "kafka_dlt-original-partition": {"$base64": "AAAA"},
                "kafka_dlt-original-offset": {"$base64": base64.b64encode(b"\x00" * 100).decode()},
                "kafka_dlt-original-timestamp": {"$base64": base64.b64encode(b"\x7f" * 8).decode()},
                "retry_topic-attempts": {"$base64": base64.b64encode(b"\xff" * 8).decode()},
            },
            {"timestamp": "soon"},
            {},
            id="invalid-and-odd-length-base64",
        ),
        pytest.param(
            "kafka",
            {"__connect.errors.topic": "t\x00o\ud800pic", "__connect.errors.exception.message": "a\x00b\udfffc"},
            {},
            {},
            id="nul-and-lone-surrogates",
        ),
        pytest.param(
            "sqs",
            {
                "x-exception-class": {
                    "DataType": "Binary",
                    "BinaryValue": {"$base64": base64.b64encode(b"\xff").decode()},
                }
            },
            {"ApproximateReceiveCount": "lots", "SentTimestamp": "-1", "DeadLetterQueueSourceArn": {"arn": 1}},
            {"dlq_sources": "arn:aws:sqs:us-east-1:000000000000:orders-work"},
            id="sqs-odd-attributes-and-a-string-of-sources",
        ),
        pytest.param("sqs", {}, {}, {"dlq_sources": [{"arn": 1}, None, 7, "x" * 10_000]}, id="odd-dlq-sources"),
        pytest.param("rabbitmq", None, None, {}, id="none-headers-and-properties"),
        pytest.param("rabbitmq", "headers", ["properties"], {}, id="non-dict-headers-and-properties"),
        pytest.param("rabbitmq", {1: "x", None: "y", ("t",): "z"}, {}, {}, id="non-text-header-names"),
        pytest.param(None, {}, {}, {}, id="no-kind"),
        pytest.param("azure-service-bus", {"x-exception-class": "E"}, {}, {}, id="unknown-kind"),
        pytest.param("rabbitmq", {}, {}, {"header_mapping": "error_class=x"}, id="header-mapping-not-a-dict"),
        pytest.param(
            "rabbitmq",
            {"x-a": DEEP, "x-b": float("inf"), "x-c": [[[[HUGE]]]]},
            {},
            {"header_mapping": {"error_class": "x-a", "attempt_count": "x-b", "origin": "x-c", "reason": None}},
            id="header-mapping-to-hostile-values",
        ),
        pytest.param("sqs", {}, {}, {"body": "not bytes"}, id="body-not-bytes"),
        pytest.param("kafka", {}, {}, {"body": b"{" * 2_000_000}, id="huge-body"),
        pytest.param(
            "kafka",
            {"lang": "py", "task": HUGE, "id": DEEP, "retries": "-4", "argsrepr": HUGE},
            {},
            {},
            id="hostile-celery-headers",
        ),
        pytest.param(
            "rabbitmq",
            {"MT-Fault-RetryCount": 10**30, "MT-Fault-Timestamp": "9999-12-31T23:59:59-23:59", "MT-Reason": HUGE},
            {},
            {},
            id="hostile-masstransit-headers",
        ),
    ],
)
def test_it_never_raises_on_hostile_input(
    kind: Any, headers: Any, properties: Any, extra: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    failure = normalise(kind, headers, properties, **extra)
    assert isinstance(failure, Failure)
    assert_sane(failure)
    # Handled by the readers, not by the last-resort exception guard (which logs).
    assert not [r for r in caplog.records if r.name == "recovery.metadata"]


def test_it_truncates_each_field_to_its_limit() -> None:
    headers = {
        "x-exception-class": "C" * 10_000,
        "x-exception-message": "M" * 10_000,
        "x-exception-stacktrace": "S" * 100_000,
        "x-origin": "O" * 10_000,
        "x-reason": "R" * 10_000,
        "x-id": "I" * 10_000,
        "x-count": 10**12,
    }
    mapping = {"origin": "x-origin", "reason": "x-reason", "source_message_id": "x-id", "attempt_count": "x-count"}
    failure = normalise("rabbitmq", headers, {}, header_mapping=mapping)
    assert len(failure.error_class) == MAX_ERROR_CLASS == 300
    assert len(failure.error_message) == MAX_ERROR_MESSAGE == 4000
    assert len(failure.stack_trace) == MAX_STACK_TRACE == 50_000
    assert len(failure.origin) == MAX_ORIGIN == 500
    assert len(failure.reason) == MAX_REASON == 200
    assert len(failure.source_message_id) == MAX_SOURCE_MESSAGE_ID
    assert failure.attempt_count == MAX_ATTEMPTS


def test_it_strips_nul_characters_from_decoded_bytes() -> None:
    raw = b"bad\x00 value\x00"
    failure = normalise("kafka", kafka_headers(("kafka_dlt-exception-message", raw)), {})
    assert failure.error_message == "bad value"


def test_it_returns_an_empty_failure_for_a_plain_message() -> None:
    failure = normalise("kafka", {"content-type": "application/json"}, {"topic": "orders.dlq", "partition": 0})
    assert failure == Failure()


_header_names = st.sampled_from(
    [
        "x-death",
        "x-first-death-queue",
        "x-first-death-exchange",
        "x-exception-message",
        "kafka_dlt-original-partition",
        "kafka_dlt-original-topic",
        "__connect.errors.topic",
        "__connect.errors.offset",
        "MT-Fault-RetryCount",
        "NServiceBus.TimeOfFailure",
        "task",
        "id",
        "lang",
        "retries",
        "count",
        "time",
        "queue",
        "routing-keys",
        "DataType",
        "StringValue",
        "$base64",
    ]
) | st.text(max_size=8)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_header_names, children, max_size=4),
    max_leaves=30,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(["rabbitmq", "sqs", "kafka"]),
    headers=st.dictionaries(_header_names, _json, max_size=8),
    properties=st.dictionaries(_header_names | st.sampled_from(["timestamp", "message_id"]), _json, max_size=4),
    body=st.binary(max_size=200),
)
def test_it_never_raises_on_arbitrary_json_shapes(
    kind: str, headers: dict[str, Any], properties: dict[str, Any], body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    assert_sane(normalise(kind, headers, properties, body=body, dlq_sources=["a", "b"]))
    assert not [r for r in caplog.records if r.name == "recovery.metadata"]
