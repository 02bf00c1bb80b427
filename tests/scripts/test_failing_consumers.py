"""scripts/demo/failing_consumers: against the real local brokers, each seeder's consumers fail part
of the mix and the broker (or the framework, for Kafka) dead-letters exactly the expected messages.

Every module fixture seeds under its own prefix and deletes its queues/topics afterwards."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pika
import pytest
from confluent_kafka import Consumer, TopicPartition

from scripts.demo.failing_consumers import (
    SeedError,
    remove_kafka,
    remove_rabbitmq,
    remove_sqs,
    seed_kafka,
    seed_rabbitmq,
    seed_sqs,
)
from scripts.demo.kafka_apps import topic_depth
from scripts.demo.rabbitmq_apps import connection_parameters
from tests.namespace import unique

ROOT = Path(__file__).resolve().parents[2]

# xdist_group: one pytest worker runs the module, so each module fixture seeds its broker once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("failing-consumers")]


def _prefix() -> str:
    return unique("t", 8)


def _dlq(summary: dict[str, Any], address_suffix: str) -> dict[str, Any]:
    return next(dlq for dlq in summary["dlqs"] if dlq["address"].endswith(address_suffix))


# RabbitMQ ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[tuple[str, dict[str, Any]]]:
    prefix = _prefix()
    try:
        yield prefix, seed_rabbitmq(prefix)
    finally:
        remove_rabbitmq(prefix)


def _rabbit_depth(queue: str) -> int:
    connection = pika.BlockingConnection(connection_parameters())
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def _rabbit_peek(queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Every message of ``queue``, put back afterwards."""
    connection = pika.BlockingConnection(connection_parameters())
    channel = connection.channel()
    seen = []
    while True:
        method, properties, body = channel.basic_get(queue)
        if method is None:
            break
        seen.append((properties, body))
    channel.basic_nack(0, multiple=True, requeue=True)
    connection.close()
    return seen


def test_rabbitmq_seeder_fills_both_dlqs(rabbitmq: tuple[str, dict[str, Any]]) -> None:
    prefix, summary = rabbitmq
    orders, payments = _dlq(summary, ".orders.dlq"), _dlq(summary, ".payments.dlq")
    assert summary["vhost"] == "/"
    assert (orders["expected"], payments["expected"]) == (12, 8)
    assert _rabbit_depth(f"{prefix}.orders.dlq") == orders["depth"] == 12
    assert _rabbit_depth(f"{prefix}.payments.dlq") == payments["depth"] == 8
    assert _rabbit_depth(f"{prefix}.orders.work") == _rabbit_depth(f"{prefix}.payments.work") == 0
    assert payments["header_mapping"]["error_class"] == "x-exception-class"


def test_rabbitmq_orders_dead_letters_carry_x_death(rabbitmq: tuple[str, dict[str, Any]]) -> None:
    prefix, _ = rabbitmq
    messages = _rabbit_peek(f"{prefix}.orders.dlq")
    assert len(messages) == 12
    for properties, _body in messages:
        death = properties.headers["x-death"][0]
        assert death["reason"] == "rejected"
        assert death["queue"] == properties.headers["x-first-death-queue"] == f"{prefix}.orders.work"
        assert properties.message_id and properties.timestamp
    bodies = [body for _, body in messages]
    assert max(len(body) for body in bodies) == 1024 * 1024
    assert any(properties.headers.get("task") == "orders.tasks.reserve_stock" for properties, _ in messages)
    notes = [properties.headers.get("x-customer-note") for properties, _ in messages]
    assert "<script>alert(1)</script>" in notes


def test_rabbitmq_payments_dead_letters_carry_exception_headers(rabbitmq: tuple[str, dict[str, Any]]) -> None:
    prefix, _ = rabbitmq
    messages = _rabbit_peek(f"{prefix}.payments.dlq")
    assert len(messages) == 8
    classes = {properties.headers["x-exception-class"] for properties, _ in messages}
    assert "requests.exceptions.ReadTimeout" in classes
    for properties, _ in messages:
        assert properties.headers["x-original-queue"] == f"{prefix}.payments.work"
        assert properties.headers["x-exception-stacktrace"].startswith("Traceback (most recent call last):")
        assert isinstance(properties.headers["x-retry-count"], int)


def test_rabbitmq_seeder_run_twice_adds_nothing(rabbitmq: tuple[str, dict[str, Any]]) -> None:
    prefix, _ = rabbitmq
    again = seed_rabbitmq(prefix)
    assert [dlq["status"] for dlq in again["dlqs"]] == ["present", "present"]
    assert _rabbit_depth(f"{prefix}.orders.dlq") == 12
    assert _rabbit_depth(f"{prefix}.payments.dlq") == 8


def test_rabbitmq_reset_seeds_from_scratch(rabbitmq: tuple[str, dict[str, Any]]) -> None:
    prefix, _ = rabbitmq
    again = seed_rabbitmq(prefix, reset=True)
    assert [dlq["status"] for dlq in again["dlqs"]] == ["seeded", "seeded"]
    assert _rabbit_depth(f"{prefix}.orders.dlq") == 12


def test_a_half_emptied_dlq_is_left_alone_with_a_clear_error() -> None:
    prefix = _prefix()
    try:
        seed_rabbitmq(prefix)
        connection = pika.BlockingConnection(connection_parameters())
        channel = connection.channel()
        method, _, _ = channel.basic_get(f"{prefix}.orders.dlq")
        channel.basic_ack(method.delivery_tag)
        connection.close()
        with pytest.raises(SeedError, match=rf"{prefix}\.orders\.dlq holds 11 of the 12 .*reset"):
            seed_rabbitmq(prefix)
        assert _rabbit_depth(f"{prefix}.orders.dlq") == 11
    finally:
        remove_rabbitmq(prefix)


def test_a_missing_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RABBITMQ_PASSWORD")
    with pytest.raises(SeedError, match="LOCAL_RABBITMQ_PASSWORD"):
        seed_rabbitmq(_prefix())


def test_the_cli_prints_the_summary_as_json() -> None:
    prefix = _prefix()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "scripts.demo.failing_consumers", "--prefix", prefix, "rabbitmq"],
            cwd=ROOT,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        [summary] = json.loads(result.stdout)
        assert summary["broker"] == "rabbitmq"
        assert [dlq["depth"] for dlq in summary["dlqs"]] == [12, 8]
    finally:
        remove_rabbitmq(prefix)


# SQS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqs() -> Iterator[tuple[str, dict[str, Any]]]:
    prefix = _prefix()
    try:
        yield prefix, seed_sqs(prefix)
    finally:
        remove_sqs(prefix)


def _sqs_client() -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=os.environ["LOCAL_SQS_ENDPOINT_URL"],
        region_name=os.environ["LOCAL_SQS_REGION"],
        aws_access_key_id=os.environ["LOCAL_SQS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["LOCAL_SQS_SECRET_ACCESS_KEY"],
    )


def _sqs_depth(client: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[name]) for name in names)


def test_sqs_seeder_fills_the_dlq_through_the_redrive_policy(sqs: tuple[str, dict[str, Any]]) -> None:
    prefix, summary = sqs
    client = _sqs_client()
    dlq = summary["dlqs"][0]
    [work_url] = dlq["sources"]
    assert dlq["address"].endswith(f"/{prefix}-orders-dlq") and dlq["expected"] == 12
    assert _sqs_depth(client, dlq["address"]) == 12
    assert _sqs_depth(client, work_url) == 0

    received: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 10
    while len(received) < 12 and time.monotonic() < deadline:
        batch = client.receive_message(
            QueueUrl=dlq["address"],
            MaxNumberOfMessages=10,
            VisibilityTimeout=20,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        received.update((message["MessageId"], message) for message in batch)
    handles = [message["ReceiptHandle"] for message in received.values()]
    for start in range(0, len(handles), 10):  # back to visible for the other tests
        client.change_message_visibility_batch(
            QueueUrl=dlq["address"],
            Entries=[
                {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for n, handle in enumerate(handles[start : start + 10])
            ],
        )
    assert len(received) == 12
    # Received twice from the work queue before the redrive moved them (plus this receive).
    assert all(int(message["Attributes"]["ApproximateReceiveCount"]) >= 2 for message in received.values())
    attributes = [message.get("MessageAttributes", {}) for message in received.values()]
    assert any(a.get("content-transfer-encoding", {}).get("StringValue") == "base64" for a in attributes)
    assert any(a.get("x-customer-note", {}).get("StringValue") == "<script>alert(1)</script>" for a in attributes)
    assert any('"content-encoding":"utf-8"' in message["Body"] for message in received.values())  # kombu envelope


def test_sqs_seeder_run_twice_adds_nothing(sqs: tuple[str, dict[str, Any]]) -> None:
    prefix, summary = sqs
    again = seed_sqs(prefix)
    assert again["dlqs"][0]["status"] == "present"
    assert _sqs_depth(_sqs_client(), summary["dlqs"][0]["address"]) == 12


# Kafka ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kafka() -> Iterator[tuple[str, dict[str, Any]]]:
    prefix = _prefix()
    try:
        yield prefix, seed_kafka(prefix)
    finally:
        remove_kafka(prefix)


def _reader() -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": os.environ["LOCAL_KAFKA_BOOTSTRAP_SERVERS"],
            "group.id": unique("test-reader", 8),
            "enable.auto.commit": False,
        }
    )


def _records(topic: str, count: int) -> list[Any]:
    consumer = _reader()
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, partition, 0) for partition in partitions])
    records = []
    deadline = time.monotonic() + 15
    while len(records) < count and time.monotonic() < deadline:
        record = consumer.poll(0.5)
        if record is not None and record.error() is None:
            records.append(record)
    consumer.close()
    return records


def test_kafka_seeder_fills_the_dlt_and_the_connect_dlq(kafka: tuple[str, dict[str, Any]]) -> None:
    prefix, summary = kafka
    assert summary["capture_group"] == f"{prefix}-dlq-capture"
    assert (_dlq(summary, ".DLT")["expected"], _dlq(summary, "connect.dlq")["expected"]) == (12, 7)
    consumer = _reader()
    try:
        assert topic_depth(consumer, f"{prefix}-orders") == 24
        assert topic_depth(consumer, f"{prefix}-orders.DLT") == 12
        assert topic_depth(consumer, f"{prefix}-connect.dlq") == 7
    finally:
        consumer.close()


def test_kafka_dlt_records_carry_spring_headers(kafka: tuple[str, dict[str, Any]]) -> None:
    prefix, _ = kafka
    records = _records(f"{prefix}-orders.DLT", 12)
    assert len(records) == 12
    for record in records:
        headers = dict(record.headers())
        assert headers["kafka_dlt-exception-fqcn"].endswith(b"ListenerExecutionFailedException")
        assert len(headers["kafka_dlt-original-partition"]) == 4
        assert struct.unpack(">i", headers["kafka_dlt-original-partition"])[0] == record.partition()
        assert len(headers["kafka_dlt-original-offset"]) == len(headers["kafka_dlt-original-timestamp"]) == 8
        assert headers["kafka_dlt-original-topic"] == f"{prefix}-orders".encode()
        assert headers["kafka_dlt-original-consumer-group"] == f"{prefix}-orders-app".encode()
    causes = {dict(record.headers())["kafka_dlt-exception-cause-fqcn"] for record in records}
    assert b"java.net.SocketTimeoutException" in causes


def test_kafka_connect_dlq_records_carry_connect_headers(kafka: tuple[str, dict[str, Any]]) -> None:
    prefix, _ = kafka
    records = _records(f"{prefix}-connect.dlq", 7)
    assert len(records) == 7
    for record in records:
        headers = dict(record.headers())
        assert headers["__connect.errors.exception.class.name"]
        assert headers["__connect.errors.topic"] == f"{prefix}-orders".encode()
        assert headers["__connect.errors.stage"] in (b"VALUE_CONVERTER", b"TASK_PUT")


def test_kafka_seeder_run_twice_adds_nothing(kafka: tuple[str, dict[str, Any]]) -> None:
    prefix, _ = kafka
    again = seed_kafka(prefix)
    assert [dlq["status"] for dlq in again["dlqs"]] == ["present", "present"]
    consumer = _reader()
    try:
        assert topic_depth(consumer, f"{prefix}-orders") == 24
        assert topic_depth(consumer, f"{prefix}-orders.DLT") == 12
    finally:
        consumer.close()
