"""Replay targets come from the broker's own record first (invariant 14), against the real brokers:
a real Celery worker rejecting a task on RabbitMQ, a real SQS redrive, Kafka records written with
the headers Kafka Streams and share groups write. The letters are captured by the console and the
plan's dry run and frozen items say where each target came from; for Kafka targets the dry run
names the consumer groups that will read the replayed records."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pika
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from recovery.brokers.registry import broker_session
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import CaptureTrigger, DeadLetter, PlanItem, TargetSource
from recovery.permissions import Role
from recovery.replay import freeze, readers, services
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.namespace import unique
from tests.recovery.replay.celery_reject_app import TASK, make_app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def _capture(dlq) -> list[DeadLetter]:
    capture_pass_run(pass_id=capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI).pk)
    return list(DeadLetter.objects.filter(dlq=dlq).order_by("id"))


def _plan(make_user, dlq):
    author = make_user(Role.OPERATOR)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="put them back")
    return author, services.plan_update(actor=author, plan=plan, changes={"include_held": True})


def _wait(condition, seconds: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# -- RabbitMQ -------------------------------------------------------------------------------------


def _amqp_url() -> str:
    """The local RabbitMQ URL with its credentials, as a Celery application is configured."""
    split = urlsplit(os.environ["LOCAL_RABBITMQ_URL"])
    netloc = f"{os.environ['LOCAL_RABBITMQ_USERNAME']}:{os.environ['LOCAL_RABBITMQ_PASSWORD']}@{split.netloc}"
    return urlunsplit((split.scheme, netloc, split.path, "", ""))


def _depth(rabbit, queue: str) -> int:
    connection, channel = rabbit._channel()
    try:
        return channel.queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def _dead_lettering_pair(rabbit) -> tuple[str, str]:
    """A work queue that dead-letters (default exchange) to a DLQ queue; both cleaned up."""
    work, dlq = unique("work"), unique("work-dlq")
    connection, channel = rabbit._channel()
    channel.queue_declare(dlq, durable=True)
    channel.exchange_declare(work, exchange_type="direct", durable=True)
    channel.queue_declare(
        work, durable=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    )
    channel.queue_bind(work, work, routing_key=work)
    connection.close()
    rabbit.queues.extend([work, dlq])
    return work, dlq


def test_a_celery_task_rejected_on_rabbitmq_gets_its_queue_as_target_without_an_override(rabbit, make_user) -> None:
    work, dlq_name = _dead_lettering_pair(rabbit)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}  # a plain Celery app, no Django
    env.update(CELERY_REJECT_BROKER=_amqp_url(), CELERY_REJECT_QUEUE=work, CELERY_REJECT_DLQ=dlq_name)
    worker = subprocess.Popen(  # a real Celery worker; stopped below by its own pid
        [sys.executable, "-m", "celery", "-A", "tests.recovery.replay.celery_reject_app", "worker", "--pool", "solo",
         "-Q", work, "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        app = make_app(_amqp_url(), work, dlq_name)
        with app.connection_for_write() as connection:
            app.send_task(TASK, args=[42], queue=work, connection=connection)
        _wait(lambda: _depth(rabbit, dlq_name) == 1, what="RabbitMQ to dead-letter the rejected task")
    finally:
        worker.terminate()
        worker.wait(timeout=20)

    dlq = rabbit.dlq_at(dlq_name)
    [letter] = _capture(dlq)
    assert letter.origin == f"celery:{TASK}" and letter.reason == "rejected" and not letter.error_message
    author, plan = _plan(make_user, dlq)
    dry = freeze.dry_run(plan)
    assert dry.included == 1, dry.exclusions
    target = f"{rabbit.broker.name}: (default exchange) → {work}"
    assert dry.target_sources == {(target, "broker record"): 1}
    plan = services.plan_submit(actor=author, plan=plan)
    item = PlanItem.objects.get(plan=plan)
    assert item.target_source == TargetSource.BROKER
    assert (item.target["name"], item.target["routing_key"]) == ("", work)


def test_producer_and_framework_headers_do_not_override_what_rabbitmq_recorded(rabbit, make_user) -> None:
    work, dlq_name = _dead_lettering_pair(rabbit)
    original = {"x-original-exchange": "payments", "x-original-routingKey": "payment.created"}
    framework_headers = [
        original,  # Spring AMQP / a producer
        {"MT-Fault-InputAddress": "rabbitmq://localhost/billing", "MT-Fault-ExceptionType": "System.TimeoutException"},
        {"NServiceBus.FailedQ": "Billing@worker-1", "NServiceBus.ExceptionInfo.ExceptionType": "System.Exception"},
    ]
    connection, channel = rabbit._channel()
    channel.confirm_delivery()
    for n, headers in enumerate(framework_headers):
        channel.basic_publish(work, work, b'{"order": %d}' % n, pika.BasicProperties(headers=headers, delivery_mode=2))
        method, _props, _body = channel.basic_get(work)
        channel.basic_reject(method.delivery_tag, requeue=False)  # the consumer gives up: RabbitMQ writes x-death
    connection.close()
    _wait(lambda: _depth(rabbit, dlq_name) == 3, what="the rejected messages in the DLQ")
    dlq = rabbit.dlq_at(dlq_name)
    rabbit.fill(dlq, [(b'{"order": 9}', original)])  # a letter whose only record is the producer's headers

    letters = _capture(dlq)
    assert len(letters) == 4
    _author, plan = _plan(make_user, dlq)
    dry = freeze.dry_run(plan)
    broker = rabbit.broker.name
    assert dry.target_sources == {
        (f"{broker}: (default exchange) → {work}", "broker record"): 3,
        (f"{broker}: payments → payment.created", "from message headers"): 1,
    }


# -- SQS ------------------------------------------------------------------------------------------


def test_an_sqs_redrive_goes_back_to_its_source_queue_whatever_the_message_attributes_say(
    sqs_harness, make_user
) -> None:
    client = sqs_harness.client
    dlq_url = sqs_harness.new_queue()
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = client.create_queue(
        QueueName=unique("source"),
        Attributes={"RedrivePolicy": f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "1"}}'},
    )["QueueUrl"]
    sqs_harness.queues.append(source)
    attributes = {
        "MT-Fault-InputAddress": {"DataType": "String", "StringValue": "amazonsqs://us-east-1/elsewhere"},
        "x-original-topic": {"DataType": "String", "StringValue": "elsewhere"},
    }
    client.send_message(QueueUrl=source, MessageBody='{"order": 1}', MessageAttributes=attributes)

    def redriven() -> bool:
        client.receive_message(QueueUrl=source, VisibilityTimeout=0, WaitTimeSeconds=0)
        depth = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(depth["Attributes"]["ApproximateNumberOfMessages"]) == 1

    _wait(redriven, what="SQS to move the message to its DLQ")
    dlq = sqs_harness.dlq_at(dlq_url)
    [letter] = _capture(dlq)
    assert letter.failure_extras["replay_origin_source"] == "broker", letter.failure_extras
    _author, plan = _plan(make_user, dlq)
    dry = freeze.dry_run(plan)
    assert dry.target_sources == {(f"{sqs_harness.broker.name}: {source}", "broker record"): 1}


# -- Kafka ----------------------------------------------------------------------------------------

STREAMS_HEADERS = {
    "__streams.errors.exception": b"org.apache.kafka.common.errors.SerializationException",
    "__streams.errors.message": b"Size of data received by IntegerDeserializer is not 4",
    "__streams.errors.stacktrace": b"org.apache.kafka.common.errors.SerializationException: Size of data",
    "__streams.errors.partition": b"0",
}


def _topics(kafka_harness, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": kafka_harness.servers})
    for future in admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names]).values():
        future.result(timeout=10)
    kafka_harness.topics.extend(names)


def _produce(kafka_harness, topic: str, records: list[tuple[bytes, dict[str, bytes]]]) -> None:
    producer = Producer({"bootstrap.servers": kafka_harness.servers, "batch.num.messages": 1, "acks": "all"})
    for body, headers in records:
        producer.produce(topic, value=body, headers=list(headers.items()))
    assert producer.flush(30) == 0


# serial: discovery reads the first record of every topic on the shared broker; twice, beside
# parallel workers that create and delete topics, the xdist worker running it died without a
# trace (suspected: librdkafka reading a topic deleted under it). Alone it has always passed.
@pytest.mark.serial
def test_kafka_streams_and_share_group_dead_letters_are_found_read_and_sent_to_their_source_topic(
    kafka_harness, make_user
) -> None:
    source, payments = unique("clicks"), unique("payments")
    dead = unique("clicks-streams-errors")  # Kafka Streams lets the application name it anything
    share_group = unique("payments-workers")
    _topics(kafka_harness, source, payments, dead)
    _produce(kafka_harness, source, [(b"click", {})])
    streams = [
        (b"\x00\x01", {**STREAMS_HEADERS, "__streams.errors.topic": source.encode(), "__streams.errors.offset": b"0"}),
        (b"\x00\x02", {**STREAMS_HEADERS, "__streams.errors.topic": source.encode(), "__streams.errors.offset": b"1",
                       "x-original-topic": b"elsewhere"}),
    ]  # fmt: skip
    share = [
        (b'{"payment": 9}', {"__dlq.errors.topic": payments.encode(), "__dlq.errors.partition": b"0",
                             "__dlq.errors.offset": b"3", "__dlq.errors.group": share_group.encode(),
                             "__dlq.errors.delivery.count": b"5",
                             "__dlq.errors.message": b"Offset delivery count exceeded the threshold."}),
    ]  # fmt: skip
    _produce(kafka_harness, dead, streams + share)
    # another application reads the source topic: it will receive the replayed records too
    billing = unique("billing")
    consumer = Consumer({"bootstrap.servers": kafka_harness.servers, "group.id": billing, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(source, 0, 1)], asynchronous=False)
    consumer.close()

    with broker_session(kafka_harness.broker, timeout=5) as adapter:
        found = {c.address.name: c for c in adapter.list_candidates()}
    assert dead in found, "a dead-letter topic of any name is found by its records' headers"
    assert found[dead].sources == (source,)

    dlq = kafka_harness.dlq_at(dead, consumer_group=found[dead].address.group)
    letters = _capture(dlq)
    assert [x.origin for x in letters] == [f"kafka:{source}", f"kafka:{source}", f"kafka:{payments}"]
    assert letters[0].error_class == "org.apache.kafka.common.errors.SerializationException"
    assert letters[2].attempt_count == 5
    _author, plan = _plan(make_user, dlq)
    dry = freeze.dry_run(plan)
    broker = kafka_harness.broker.name
    assert dry.target_sources == {
        (f"{broker}: {source}", "framework record"): 2,
        (f"{broker}: {payments}", "broker record"): 1,
    }
    by_topic = {r.topic: r for r in readers.kafka_readers(dry.kafka_targets, timeout=5)}
    assert not by_topic[source].error and billing in by_topic[source].cluster_groups
    assert by_topic[payments].recorded_groups == [share_group]
