"""SQS demo app: an orders service whose failures the queue's redrive policy moves to the DLQ.

``<prefix>-orders`` has ``RedrivePolicy {"deadLetterTargetArn": <arn of <prefix>-orders-dlq>,
"maxReceiveCount": "2"}``. The consumer deletes what it processed and, for a failure, only makes the
message visible again at once (visibility 0) so it is retried quickly; after the second receive the
broker (LocalStack) moves it to the DLQ. SQS bodies must be text: a producer with bytes that are
not UTF-8 sends base64 text and says so in a ``content-transfer-encoding`` message attribute.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scripts.demo.apps import AppFailure, decode_base64_body, handle_order
from scripts.demo.common import DEFAULT_TIMEOUT, DlqReport, SeedError, check_flow_state, require_env, wait_for_depth
from scripts.demo.mix import ONE_MIB, DemoMessage, kombu_envelope, order_mix

MAX_RECEIVE_COUNT = 2
MAX_BATCH_BYTES = 900 * 1024  # under SendMessageBatch's 1 MiB total, leaving room for attributes
# SQS's 1 MiB limit covers the body and the message attributes: the big poison body leaves them 1 KiB.
BIG_BODY_BYTES = ONE_MIB - 1024
TRANSFER_ENCODING = "content-transfer-encoding"


def sqs_client() -> Any:
    """A boto3 SQS client for the LOCAL_SQS_* endpoint."""
    return boto3.client(
        "sqs",
        endpoint_url=require_env("LOCAL_SQS_ENDPOINT_URL"),
        region_name=require_env("LOCAL_SQS_REGION"),
        aws_access_key_id=require_env("LOCAL_SQS_ACCESS_KEY_ID"),
        aws_secret_access_key=require_env("LOCAL_SQS_SECRET_ACCESS_KEY"),
    )


def queue_names(prefix: str) -> tuple[str, str]:
    """(work queue, DLQ) names of ``prefix``."""
    return f"{prefix}-orders", f"{prefix}-orders-dlq"


def _queue_url(client: Any, name: str) -> str | None:
    try:
        return client.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" in exc.response["Error"]["Code"]:
            return None
        raise


def remove_sqs(prefix: str) -> None:
    """Delete the demo queues of ``prefix`` (missing ones are fine)."""
    client = sqs_client()
    for name in queue_names(prefix):
        url = _queue_url(client, name)
        if url is not None:
            client.delete_queue(QueueUrl=url)


def _ensure_queues(client: Any, prefix: str) -> tuple[str, str, str]:
    """Create (or adopt) the DLQ and the work queue with its redrive policy: (work url, dlq url, dlq arn)."""
    work, dlq = queue_names(prefix)
    dlq_url = client.create_queue(QueueName=dlq, Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
        "VisibilityTimeout": "30",
    }
    try:
        work_url = client.create_queue(QueueName=work, Attributes=attributes)["QueueUrl"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        work_url = client.get_queue_url(QueueName=work)["QueueUrl"]
        client.set_queue_attributes(QueueUrl=work_url, Attributes=attributes)
    return work_url, dlq_url, dlq_arn


def queue_depth(client: Any, url: str) -> int:
    """Messages in the queue: visible, in flight and delayed."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes.get(name, 0)) for name in names)


def _entry(message: DemoMessage, index: int) -> dict[str, Any]:
    """The SendMessage entry of one message: text body and message attributes."""
    if message.celery is not None:
        message = kombu_envelope(message, routing_key="orders")
        # kombu's SQS transport carries everything in the body; it sets no message attributes.
        return {"Id": str(index), "MessageBody": message.body.decode("utf-8")}
    attributes = {
        "event-type": message.event_type,
        "correlation-id": message.correlation_id,
        "content-type": message.content_type,
        **{name: str(value) for name, value in message.headers.items()},
    }
    try:
        body = message.body.decode("utf-8")
    except UnicodeDecodeError:
        body = base64.b64encode(message.body).decode("ascii")
        attributes[TRANSFER_ENCODING] = "base64"
    return {
        "Id": str(index),
        "MessageBody": body,
        "MessageAttributes": {name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()},
    }


def _publish(client: Any, url: str, messages: list[DemoMessage]) -> None:
    """The producer: batches of up to 10 (a message too big for a batch goes alone); any failure raises."""
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for index, message in enumerate(messages):
        entry = _entry(message, index)
        entry_size = len(entry["MessageBody"].encode("utf-8"))
        if batches[-1] and (len(batches[-1]) == 10 or size + entry_size > MAX_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += entry_size
    for batch in batches:
        if len(batch) == 1:
            single = {key: value for key, value in batch[0].items() if key != "Id"}
            client.send_message(QueueUrl=url, **single)
            continue
        failed = client.send_message_batch(QueueUrl=url, Entries=batch).get("Failed", [])
        if failed:
            raise SeedError(f"SQS refused {len(failed)} demo messages on {url}: {failed[0]}")


def _headers(message: dict[str, Any]) -> dict[str, str]:
    return {
        name: attribute.get("StringValue", "")
        for name, attribute in message.get("MessageAttributes", {}).items()
        if attribute.get("DataType", "").startswith(("String", "Number"))
    }


def _body(message: dict[str, Any], headers: dict[str, str]) -> bytes:
    if headers.get(TRANSFER_ENCODING) == "base64":
        return decode_base64_body(message["Body"])
    return message["Body"].encode("utf-8")


def _consume(client: Any, url: str, *, deadline: float) -> None:
    """The orders service: delete what it processed, release failures until the redrive takes them."""
    while True:
        received = client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        done: list[dict[str, str]] = []
        retry: list[dict[str, Any]] = []
        for message in received:
            headers = _headers(message)
            try:
                handle_order(_body(message, headers), headers)
            except AppFailure:
                retry.append(
                    {"Id": message["MessageId"], "ReceiptHandle": message["ReceiptHandle"], "VisibilityTimeout": 0}
                )
            else:
                done.append({"Id": message["MessageId"], "ReceiptHandle": message["ReceiptHandle"]})
        if done:
            client.delete_message_batch(QueueUrl=url, Entries=done)
        if retry:
            client.change_message_visibility_batch(QueueUrl=url, Entries=retry)
        if received:
            continue
        if queue_depth(client, url) == 0:
            return
        if time.monotonic() > deadline:
            raise SeedError(f"timed out consuming {url}: {queue_depth(client, url)} messages left")
        time.sleep(0.1)


def seed_sqs(prefix: str = "demo", *, reset: bool = False, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Create ``<prefix>-orders`` with its redrive to ``<prefix>-orders-dlq`` and fail half the mix.

    Idempotent: a DLQ that already holds its expected messages is left alone. ``reset`` deletes the
    queues first. Raises SeedError naming the queue if the DLQ is not filled in ``timeout``.
    """
    started = time.monotonic()
    deadline = started + timeout
    if reset:
        remove_sqs(prefix)
    client = sqs_client()
    messages = order_mix(big_body=BIG_BODY_BYTES)
    try:
        work_url, dlq_url, dlq_arn = _ensure_queues(client, prefix)
        report = DlqReport(
            address=dlq_url,
            expected=sum(m.fails for m in messages),
            sources=[work_url],
            replay_target=work_url,
            extra={"name": queue_names(prefix)[1], "arn": dlq_arn, "metadata": "redrive", "max_receive_count": 2},
        )
        depth = queue_depth(client, dlq_url)
        if check_flow_state(dlq_url, depth, report.expected) == "present":
            report.status, report.depth = "present", depth
        else:
            if queue_depth(client, work_url):
                client.purge_queue(QueueUrl=work_url)  # leftovers of an interrupted run would skew the counts
            _publish(client, work_url, messages)
            _consume(client, work_url, deadline=deadline)
            remaining = max(deadline - time.monotonic(), 1.0)
            report.depth = wait_for_depth(
                dlq_url, lambda: queue_depth(client, dlq_url), report.expected, timeout=remaining
            )
    except (BotoCoreError, ClientError) as exc:
        raise SeedError(f"SQS at {require_env('LOCAL_SQS_ENDPOINT_URL')} failed for prefix {prefix!r}: {exc}") from exc
    return {
        "broker": "sqs",
        "region": require_env("LOCAL_SQS_REGION"),
        "endpoint_url": require_env("LOCAL_SQS_ENDPOINT_URL"),
        "seeded": report.status == "seeded",
        "dlqs": [report.as_dict()],
        "elapsed_s": round(time.monotonic() - started, 2),
    }
