"""Where a replay should go, as recovery.metadata records it (``replay_origin`` and who recorded it,
invariant 14): the broker's own record first, then a Kafka framework's dead-letter writer, and
producer-set headers only when nothing else names a place. Kafka Streams and share-group dead
letters are normalised like the other Kafka writers."""

from __future__ import annotations

import pytest

from recovery.brokers.base import json_safe
from recovery.metadata import normalise
from tests.recovery.test_metadata import CELERY_HEADERS, ORDERS_ORIGIN, REJECTED, SOURCE_ARN, SQS_SYSTEM, kafka_headers

STREAMS = (
    ("__streams.errors.exception", b"org.apache.kafka.common.errors.SerializationException"),
    ("__streams.errors.message", b"Size of data received by IntegerDeserializer is not 4"),
    ("__streams.errors.stacktrace", b"org.apache.kafka.common.errors.SerializationException: Size of data\n\tat x"),
    ("__streams.errors.topic", b"clicks"),
    ("__streams.errors.partition", b"2"),
    ("__streams.errors.offset", b"41"),
)
SHARE_GROUP = (
    ("__dlq.errors.topic", b"payments"),
    ("__dlq.errors.partition", b"0"),
    ("__dlq.errors.offset", b"7"),
    ("__dlq.errors.group", b"payments-workers"),
    ("__dlq.errors.delivery.count", b"5"),
    ("__dlq.errors.message", b"Offset delivery count exceeded the threshold."),
)


def test_a_celery_task_dead_lettered_by_rabbitmq_is_replayed_to_the_queue_x_death_names() -> None:
    failure = normalise("rabbitmq", json_safe({**CELERY_HEADERS, **REJECTED}), {"correlation_id": "t"})
    assert failure.origin == "celery:app.tasks.charge"  # what the failure groups show is unchanged
    assert failure.extras["replay_origin"] == ORDERS_ORIGIN
    assert failure.extras["replay_origin_source"] == "broker"


def test_producer_set_x_original_headers_do_not_override_the_broker_record() -> None:
    headers = {**REJECTED, "x-original-exchange": "elsewhere", "x-original-routingKey": "somewhere.else"}
    failure = normalise("rabbitmq", json_safe(headers), {})
    assert failure.extras["replay_origin"] == ORDERS_ORIGIN
    assert failure.extras["replay_origin_source"] == "broker"


def test_producer_set_headers_are_used_only_when_nothing_else_names_a_place() -> None:
    failure = normalise("rabbitmq", {"x-original-exchange": "orders", "x-original-routingKey": "order.created"}, {})
    assert failure.extras["replay_origin"] == "rabbitmq:exchange=orders routing_key=order.created"
    assert failure.extras["replay_origin_source"] == "headers"
    masstransit = normalise("rabbitmq", {"MT-Fault-InputAddress": "rabbitmq://localhost/shop/orders?bind=true"}, {})
    assert masstransit.extras["replay_origin"] == "queue:orders"
    assert masstransit.extras["replay_origin_source"] == "headers"
    nservicebus = normalise("rabbitmq", {"NServiceBus.FailedQ": "Billing@worker-1"}, {})
    assert nservicebus.extras["replay_origin"] == "queue:Billing"


def test_masstransit_and_nservicebus_letters_dead_lettered_by_rabbitmq_go_back_to_their_queue() -> None:
    for framework in ({"MT-Fault-InputAddress": "rabbitmq://localhost/other"}, {"NServiceBus.FailedQ": "Other"}):
        failure = normalise("rabbitmq", json_safe({**framework, **REJECTED}), {})
        assert (failure.extras["replay_origin"], failure.extras["replay_origin_source"]) == (ORDERS_ORIGIN, "broker")


def test_the_sqs_redrive_source_beats_a_framework_input_address() -> None:
    attrs = {"MT-Fault-InputAddress": {"DataType": "String", "StringValue": "amazonsqs://us-east-1/other"}}
    failure = normalise("sqs", attrs, {**SQS_SYSTEM, "DeadLetterQueueSourceArn": SOURCE_ARN})
    assert (failure.extras["replay_origin"], failure.extras["replay_origin_source"]) == (f"sqs:{SOURCE_ARN}", "broker")


def test_an_x_death_copied_onto_a_kafka_record_names_no_kafka_place() -> None:
    headers = kafka_headers(("x-first-death-queue", b"orders.work"), ("kafka_dlt-original-topic", b"orders"))
    failure = normalise("kafka", headers, {})
    assert (failure.extras["replay_origin"], failure.extras["replay_origin_source"]) == ("kafka:orders", "framework")


def test_kafka_streams_dead_letters_resolve_to_their_source_topic() -> None:
    failure = normalise("kafka", kafka_headers(*STREAMS), {})
    assert failure.origin == "kafka:clicks"
    assert failure.source_message_id == "clicks[2]@41"
    assert failure.error_class == "org.apache.kafka.common.errors.SerializationException"
    assert failure.error_message.startswith("Size of data received")
    assert failure.stack_trace.startswith("org.apache.kafka.common.errors.SerializationException")
    assert (failure.extras["replay_origin"], failure.extras["replay_origin_source"]) == ("kafka:clicks", "framework")


def test_share_group_dead_letters_are_the_broker_record_with_their_group_and_delivery_count() -> None:
    producer_set = (("x-original-topic", b"elsewhere"),)
    failure = normalise("kafka", kafka_headers(*SHARE_GROUP, *producer_set), {})
    assert failure.origin == "kafka:payments"
    assert failure.source_message_id == "payments[0]@7"
    assert failure.attempt_count == 5
    assert failure.reason == "Offset delivery count exceeded the threshold."
    assert failure.extras["consumer_group"] == "payments-workers"
    assert (failure.extras["replay_origin"], failure.extras["replay_origin_source"]) == ("kafka:payments", "broker")


@pytest.mark.parametrize("value", [b"", b"\xff\xfe", b"-1", b"9" * 40])
def test_hostile_streams_and_share_group_headers_never_raise(value: bytes) -> None:
    names = [name for name, _ in (*STREAMS, *SHARE_GROUP)]
    failure = normalise("kafka", kafka_headers(*((name, value) for name in names)), {})
    assert isinstance(failure.extras, dict)
