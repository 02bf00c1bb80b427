"""Amazon SQS adapter (boto3). The only module that imports boto3/botocore.

Choices an operator or a consumer of replayed messages should know about:

- **Bodies are text.** SQS accepts only Unicode text made of the characters
  ``#x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF``. ``publish`` refuses (confirmed=False,
  with the reason) a body that is not valid UTF-8, is empty or holds a character SQS rejects,
  instead of re-encoding it: a replay must deliver the bytes that were captured or nothing.
- **At most 10 message attributes.** Headers become String attributes (empty values are skipped).
  When there are more than 10, only ``x-replay-id``, ``x-idempotency-key``, ``x-original-message-id``
  and ``traceparent`` stay attributes and every other header goes, JSON-encoded as one object, into the attribute
  ``x-original-headers``. Headers whose name or value SQS would reject (for example a space in
  the name, a control character in the value) go there too, so one odd header never fails a
  message. A header value may also be the typed shape ``receive`` hands out
  (``{"DataType": "Number", "StringValue": "42"}`` / ``{"DataType": "Binary", "BinaryValue": ...}``),
  which is sent with its type so that an SQS-to-SQS replay keeps Number and Binary attributes.
- **FIFO.** ``MessageGroupId`` comes from ``properties["message_group_id"]`` (missing: that message
  is refused); ``MessageDeduplicationId`` from ``properties["deduplication_id"]``, else from the
  ``x-replay-id`` header (invariant 3), else none (the queue must then use content-based dedupe).
- **Batch size.** ``publish`` sends at most 10 entries and ``options["max_batch_bytes"]``
  (default 256 KiB) of payload per call; a single larger message is sent alone and SQS decides.
- **Visibility.** ``receive`` hides messages for ``options["visibility_timeout"]`` seconds (default
  120; ``null`` uses the queue's own setting). ``close`` gives back messages received and neither
  removed nor released, so they do not wait out that timeout.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

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

BATCH_ENTRIES = 10
MAX_WAIT_SECONDS = 20
DEFAULT_VISIBILITY_TIMEOUT = 120
DEFAULT_MAX_BATCH_BYTES = 256 * 1024
MAX_ATTRIBUTES = 10
REPLAY_HEADERS = ("x-replay-id", "x-idempotency-key", "x-original-message-id", "traceparent")
OVERFLOW_HEADER = "x-original-headers"
DLQ_NAME_HINTS = ("dlq", "dead-letter", "deadletter", "dead_letter")

# Errors that say the call itself is wrong (queue gone, no access): retrying cannot help.
_PERMANENT_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidSecurity",
        "InvalidAddress",
        "OptInRequired",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "UnsupportedOperation",
    }
)
# Batch-level errors caused by one entry's content: the batch is split to find the culprit.
_ENTRY_FAULT_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "InvalidMessageContents",
        "AWS.SimpleQueueService.BatchRequestTooLong",
        "BatchRequestTooLong",
        "MissingParameter",
        "MissingRequiredParameterException",
        "InvalidAttributeValue",
        "InvalidAttributeName",
        "MessageTooLong",
    }
)
_RECEIPT_CODES = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"})
_NOT_IN_FLIGHT = frozenset({"MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"})
_PERMANENT_LOCAL = (NoCredentialsError, PartialCredentialsError, ParamValidationError, NoRegionError)
_FORBIDDEN_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,254}[A-Za-z0-9_-])?$")


class SqsAdapter:
    """The BrokerAdapter for Amazon SQS and SQS-compatible endpoints (endpoint URL in ``broker.endpoint``).

    Protects invariant 1 (identity = MessageId; ``remove`` deletes only what the caller names and
    fails loudly for anything it could not delete), invariant 2 (``publish`` confirms a message only
    on a Successful entry of send_message_batch) and invariant 9 (secrets stay in the client and
    are scrubbed from every error message).
    """

    def __init__(self, broker: Broker, *, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        self._client: Any = None
        self._poll_client: Any = None
        self._credentials: dict[str, str] | None = None
        # queue URL -> receipt handle -> MessageId, for messages received and not yet given back.
        self._in_flight: dict[str, dict[str, str]] = {}

    @property
    def options(self) -> dict[str, Any]:
        return self.broker.options or {}

    @property
    def client(self) -> Any:
        """The client for every call but long polls: short timeouts, one attempt."""
        if self._client is None:
            self._client = self._new_client(read_timeout=self.timeout)
        return self._client

    @property
    def poll_client(self) -> Any:
        """A client whose read timeout outlasts a 20 s long poll; otherwise the same as ``client``."""
        if self._poll_client is None:
            self._poll_client = self._new_client(read_timeout=self.timeout + MAX_WAIT_SECONDS)
        return self._poll_client

    def _new_client(self, *, read_timeout: float) -> Any:
        if self._credentials is None:
            self._credentials = resolve_credentials(
                self.broker.credentials_ref, ("access_key_id", "secret_access_key", "session_token")
            )
        creds = self._credentials
        try:
            return boto3.session.Session().client(
                "sqs",
                endpoint_url=self.broker.endpoint or None,
                region_name=self.options.get("region", "us-east-1"),
                aws_access_key_id=creds.get("access_key_id"),
                aws_secret_access_key=creds.get("secret_access_key"),
                aws_session_token=creds.get("session_token"),
                config=Config(
                    connect_timeout=self.timeout,
                    read_timeout=read_timeout,
                    retries={"max_attempts": 1, "mode": "standard"},
                ),
            )
        except (BotoCoreError, ValueError) as exc:
            raise BrokerError(f"cannot configure the SQS client: {self._scrub(str(exc))}", permanent=True) from None

    # -- calls and errors ---------------------------------------------------------------------

    def _call(self, operation: str, context: str, *, client: Any = None, **params: Any) -> dict[str, Any]:
        """One SQS call; any failure becomes a BrokerError that carries SQS's code and message."""
        try:
            return getattr(client or self.client, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, context) from None

    def _error(self, exc: Exception, context: str) -> BrokerError:
        if isinstance(exc, ClientError):
            code, query_code, message = _error_parts(exc)
            detail = f"{code}: {message}"
            permanent = bool({code, query_code} & _PERMANENT_CODES)
        else:
            detail = str(exc) or type(exc).__name__
            permanent = isinstance(exc, _PERMANENT_LOCAL)
        text = self._scrub(f"{context}: {detail}" if context else detail)
        return BrokerError(text, permanent=permanent)

    def _int_option(self, name: str, default: int) -> int | None:
        """A whole-number broker option; ``null`` gives None. A bad value is an operator's mistake
        that no retry fixes, so it is a permanent BrokerError rather than a crash."""
        value = self.options.get(name, default)
        if value is None:
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BrokerError(f"broker option {name} must be a whole number, not {value!r}", permanent=True) from None

    def _scrub(self, text: str) -> str:
        """Invariant 9: a secret never reaches a message, even if a service echoes it back."""
        for key in ("secret_access_key", "session_token"):
            secret = (self._credentials or {}).get(key)
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text[:2000]

    # -- the Protocol ---------------------------------------------------------------------------

    def ping(self) -> Ping:
        with stopwatch() as elapsed:
            response = self._call("list_queues", "", MaxResults=1)
        where = self.broker.endpoint or "AWS"
        queues = "queues listed" if response.get("QueueUrls") else "no queues yet"
        return Ping(latency_ms=elapsed[0], detail=f"SQS at {where}: {queues}")

    def depth(self, address: DlqAddress) -> int:
        """Visible messages (ApproximateNumberOfMessages); in-flight and delayed ones are not counted."""
        response = self._call(
            "get_queue_attributes",
            f"depth of {_queue_name(address.name)}",
            QueueUrl=address.name,
            AttributeNames=["ApproximateNumberOfMessages"],
        )
        return int(response.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    def retention_seconds(self, address: DlqAddress) -> int | None:
        """MessageRetentionPeriod: SQS counts it from the message's first enqueue, even in a DLQ."""
        response = self._call(
            "get_queue_attributes",
            f"retention of {_queue_name(address.name)}",
            QueueUrl=address.name,
            AttributeNames=["MessageRetentionPeriod"],
        )
        value = response.get("Attributes", {}).get("MessageRetentionPeriod")
        return int(value) if value not in (None, "") else None

    def receive(self, address: DlqAddress, *, max_messages: int, wait_seconds: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` messages, in calls of at most 10: the first waits (long poll, at most
        20 s), the follow-ups do not, and the loop stops at the first empty answer. Messages stay on
        the queue, invisible for the visibility timeout, until ``remove`` (invariant 1)."""
        wait = max(0, min(MAX_WAIT_SECONDS, round(wait_seconds)))
        params: dict[str, Any] = {
            "QueueUrl": address.name,
            "AttributeNames": ["All"],
            "MessageSystemAttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        visibility = self._int_option("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT)
        if visibility is not None:
            params["VisibilityTimeout"] = visibility
        received: list[ReceivedMessage] = []
        seen: set[str] = set()
        while len(received) < max_messages:
            try:
                response = self._call(
                    "receive_message",
                    f"receive from {_queue_name(address.name)}",
                    client=self.poll_client if wait else self.client,
                    MaxNumberOfMessages=min(BATCH_ENTRIES, max_messages - len(received)),
                    WaitTimeSeconds=wait,
                    **params,
                )
            except BrokerError:
                # Messages already in hand are invisible now; hand them over rather than strand them
                # until their timeout. The same failure surfaces on the next call.
                if received:
                    break
                raise
            wait = 0
            fresh = [m for m in response.get("Messages", []) if m.get("MessageId") not in seen]
            if not fresh:
                break
            for raw in fresh:
                seen.add(raw["MessageId"])
                received.append(_received_message(address.name, raw))
        flying = self._in_flight.setdefault(address.name, {})
        flying.update({m.receipt: m.identity for m in received})
        return received

    def remove(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Delete these messages; call only after their rows are committed (invariant 1). Failed
        entries are retried once; entries still failing raise BrokerError naming each message."""
        failures = self._per_receipt("delete_message_batch", address.name, messages, {})
        if failures:
            expired = any(code in _RECEIPT_CODES for _, code, _ in failures)
            note = (
                " An invalid or expired receipt handle means the message became visible again: it will be"
                " received again and capture deduplicates it on its MessageId."
                if expired
                else ""
            )
            raise BrokerError(
                f"could not delete {len(failures)} message(s) from {_queue_name(address.name)}: "
                f"{_list_failures(failures)}.{note}",
                permanent=expired,
            )

    def release(self, address: DlqAddress, messages: list[ReceivedMessage]) -> None:
        """Make these messages visible again at once (visibility timeout 0). A message SQS reports as
        not in flight is already visible, which is what release wants."""
        failures = self._per_receipt(
            "change_message_visibility_batch", address.name, messages, {"VisibilityTimeout": 0}
        )
        failures = [f for f in failures if f[1] not in _NOT_IN_FLIGHT]
        if failures:
            raise BrokerError(
                f"could not release {len(failures)} message(s) on {_queue_name(address.name)}: "
                f"{_list_failures(failures)}"
            )

    def prepare_publish(self, target: Target) -> None:
        """Open the HTTPS connection with one cheap call on the target queue (its ARN)."""
        self._call("get_queue_attributes", f"ARN of {_queue_name(target.name)}", QueueUrl=target.name,
                   AttributeNames=["QueueArn"])  # fmt: skip

    def publish(self, target: Target, messages: list[OutgoingMessage]) -> list[PublishResult]:
        """Send with one confirmation per message (invariant 2): Successful entry -> confirmed with
        its MessageId; Failed entry or a message SQS cannot carry -> confirmed=False with the reason.

        Raises BrokerError only when nothing of the batch was sent (queue missing, endpoint down).
        If a later call of a split batch fails, the messages already confirmed stay confirmed and
        the rest carry the error, so the caller never re-sends what SQS accepted.
        """
        fifo = target.name.endswith(".fifo")
        results: list[PublishResult | None] = [None] * len(messages)
        ready: list[tuple[int, dict[str, Any], int]] = []
        for index, message in enumerate(messages):
            entry, size, problem = _entry(index, message, fifo=fifo)
            if problem:
                results[index] = PublishResult(index=index, confirmed=False, error=problem)
            else:
                ready.append((index, entry, size))
        limit = self._int_option("max_batch_bytes", DEFAULT_MAX_BATCH_BYTES) or DEFAULT_MAX_BATCH_BYTES
        for chunk in _chunks(ready, limit):
            try:
                answered = self._send(target.name, [entry for _, entry, _ in chunk])
            except BrokerError as exc:
                if not any(r is not None and r.confirmed for r in results):
                    raise
                for index, _, _ in chunk:
                    results[index] = PublishResult(index=index, confirmed=False, error=str(exc))
                continue
            for index, _, _ in chunk:
                results[index] = answered.get(
                    index, PublishResult(index=index, confirmed=False, error="SQS gave no answer for this entry")
                )
        return [r for r in results if r is not None]

    def list_candidates(self) -> list[Candidate]:
        """Queues that receive dead letters: any queue named in another queue's RedrivePolicy as its
        deadLetterTargetArn (sources = those queues, plus what ListDeadLetterSourceQueues adds), and
        any queue whose name says dlq / dead-letter."""
        attributes: dict[str, dict[str, str]] = {}
        for url in self._queue_urls():
            try:
                response = self.client.get_queue_attributes(
                    QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy", "ApproximateNumberOfMessages"]
                )
            except ClientError as exc:
                if set(_error_parts(exc)[:2]) & _PERMANENT_CODES:
                    continue  # deleted since the listing, or not ours to read
                raise self._error(exc, f"attributes of {_queue_name(url)}") from None
            except BotoCoreError as exc:
                raise self._error(exc, f"attributes of {_queue_name(url)}") from None
            attributes[url] = response.get("Attributes", {})
        url_by_arn = {attrs["QueueArn"]: url for url, attrs in attributes.items() if attrs.get("QueueArn")}
        sources: dict[str, set[str]] = {}
        for url, attrs in attributes.items():
            dlq_url = url_by_arn.get(_redrive_target(attrs.get("RedrivePolicy")))
            if dlq_url:
                sources.setdefault(dlq_url, set()).add(url)
        candidates = []
        for url, attrs in attributes.items():
            named = any(hint in _queue_name(url).lower() for hint in DLQ_NAME_HINTS)
            if url not in sources and not named:
                continue
            feeds = sources.get(url, set()) | self._dead_letter_sources(url)
            hints = [f"dead-letter target of {len(feeds)} queue(s)"] if feeds else []
            hints += ["name looks like a dead-letter queue"] if named else []
            depth = attrs.get("ApproximateNumberOfMessages")
            candidates.append(
                Candidate(
                    address=DlqAddress(name=url),
                    sources=tuple(sorted(feeds)),
                    depth=int(depth) if depth is not None else None,
                    hint="; ".join(hints),
                )
            )
        return sorted(candidates, key=lambda c: c.address.name)

    def close(self) -> None:
        """Give back messages still in flight (best effort: they come back anyway when their
        visibility timeout ends), then drop the clients."""
        for queue_url, receipts in list(self._in_flight.items()):
            if receipts:
                pending = [
                    ReceivedMessage(identity=mid, body=b"", headers={}, properties={}, receipt=r)
                    for r, mid in receipts.items()
                ]
                with contextlib.suppress(BrokerError):
                    self.release(DlqAddress(name=queue_url), pending)
        self._in_flight.clear()
        for client in (self._client, self._poll_client):
            if client is not None:
                client.close()
        self._client = self._poll_client = None

    # -- recovery drills (recovery/drills) -------------------------------------------------------

    def ensure_dead_letter_pair(self, work: str, dlq: str, *, max_receive_count: int = 1) -> tuple[str, str, list[str]]:
        """Create the queue ``dlq`` and the queue ``work`` whose RedrivePolicy moves a message to
        it after ``max_receive_count`` receives, unless they exist: (work URL, DLQ URL, names
        created now). An existing work queue is never altered: one that does not redrive to
        ``dlq`` is a permanent BrokerError, so a drill never runs on a queue that loses messages."""
        created: list[str] = []
        urls: dict[str, str] = {}
        for name in (dlq, work):
            url = self._existing_queue_url(name)
            if url is None:
                attributes = {}
                if name == work:
                    arn = self._queue_arn(urls[dlq])
                    policy = {"deadLetterTargetArn": arn, "maxReceiveCount": str(max_receive_count)}
                    attributes["RedrivePolicy"] = json.dumps(policy)
                url = self._call("create_queue", f"create {name}", QueueName=name, Attributes=attributes)["QueueUrl"]
                created.append(name)
            urls[name] = url
        policy = self._call(
            "get_queue_attributes", f"redrive policy of {work}", QueueUrl=urls[work], AttributeNames=["RedrivePolicy"]
        ).get("Attributes", {})
        if _redrive_target(policy.get("RedrivePolicy")) != self._queue_arn(urls[dlq]):
            raise BrokerError(
                f"queue {work} exists and does not redrive to {dlq}: set its RedrivePolicy", permanent=True
            )
        return urls[work], urls[dlq], created

    def _existing_queue_url(self, name: str) -> str | None:
        try:
            return self.client.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if set(_error_parts(exc)[:2]) & {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}:
                return None
            raise self._error(exc, f"look up {name}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"look up {name}") from None

    def _queue_arn(self, url: str) -> str:
        response = self._call("get_queue_attributes", f"ARN of {_queue_name(url)}", QueueUrl=url,
                              AttributeNames=["QueueArn"])  # fmt: skip
        return str(response.get("Attributes", {}).get("QueueArn", ""))

    # -- helpers --------------------------------------------------------------------------------

    def _per_receipt(
        self, operation: str, queue_url: str, messages: list[ReceivedMessage], extra: dict[str, Any]
    ) -> list[tuple[str, str, str]]:
        """Apply a receipt-handle batch operation in chunks of 10, retrying failed entries once.
        Returns (message id, code, message) for entries that failed twice; forgets the others."""
        verb = "delete from" if operation == "delete_message_batch" else "release on"
        pending = list(messages)
        failed: list[tuple[ReceivedMessage, str, str]] = []
        for _attempt in range(2):
            failed = []
            for start in range(0, len(pending), BATCH_ENTRIES):
                chunk = pending[start : start + BATCH_ENTRIES]
                response = self._call(
                    operation,
                    f"{verb} {_queue_name(queue_url)}",
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m.receipt, **extra} for i, m in enumerate(chunk)],
                )
                for bad in response.get("Failed", []):
                    failed.append((chunk[int(bad["Id"])], bad.get("Code", ""), bad.get("Message", "")))
            pending = [m for m, _, _ in failed]
            if not pending:
                break
        flying = self._in_flight.get(queue_url, {})
        still_failing = {id(m) for m, _, _ in failed}
        for message in messages:
            if id(message) not in still_failing:
                flying.pop(message.receipt, None)
        return [(m.identity, code, text) for m, code, text in failed]

    def _send(self, queue_url: str, entries: list[dict[str, Any]]) -> dict[int, PublishResult]:
        """One send_message_batch. A batch-level error caused by an entry's content (SQS answers so
        for some FIFO and size problems) is narrowed down by sending the entries one by one, so that
        only the faulty message fails."""
        try:
            response = self.client.send_message_batch(QueueUrl=queue_url, Entries=entries)
        except ClientError as exc:
            code, query_code, message = _error_parts(exc)
            if not {code, query_code} & _ENTRY_FAULT_CODES:
                raise self._error(exc, f"publish to {_queue_name(queue_url)}") from None
            if len(entries) == 1:
                index = int(entries[0]["Id"])
                return {index: PublishResult(index=index, confirmed=False, error=self._scrub(f"{code}: {message}"))}
            answered: dict[int, PublishResult] = {}
            for entry in entries:
                answered.update(self._send(queue_url, [entry]))
            return answered
        except BotoCoreError as exc:
            raise self._error(exc, f"publish to {_queue_name(queue_url)}") from None
        answered = {}
        for ok in response.get("Successful", []):
            index = int(ok["Id"])
            answered[index] = PublishResult(index=index, confirmed=True, broker_message_id=ok.get("MessageId", ""))
        for bad in response.get("Failed", []):
            index = int(bad["Id"])
            error = self._scrub(f"{bad.get('Code', '')}: {bad.get('Message', '')}")
            answered[index] = PublishResult(index=index, confirmed=False, error=error)
        return answered

    def _queue_urls(self) -> Iterator[str]:
        token = None
        while True:
            params: dict[str, Any] = {"MaxResults": 1000}
            if token:
                params["NextToken"] = token
            response = self._call("list_queues", "list queues", **params)
            yield from response.get("QueueUrls", [])
            token = response.get("NextToken")
            if not token:
                return

    def _dead_letter_sources(self, queue_url: str) -> set[str]:
        """ListDeadLetterSourceQueues, which also sees sources list_queues did not return. Some
        SQS-compatible emulators lack it: then the RedrivePolicy scan is all we know."""
        found: set[str] = set()
        params: dict[str, Any] = {"QueueUrl": queue_url, "MaxResults": 1000}
        try:
            while True:
                response = self.client.list_dead_letter_source_queues(**params)
                found.update(response.get("queueUrls", []))
                if not response.get("NextToken"):
                    return found
                params["NextToken"] = response["NextToken"]
        except (ClientError, BotoCoreError):
            return found


# -- pure functions ----------------------------------------------------------------------------


def _error_parts(exc: ClientError) -> tuple[str, str, str]:
    error = exc.response.get("Error", {})
    return str(error.get("Code", "")), str(error.get("QueryErrorCode", "")), str(error.get("Message", "") or exc)


def _queue_name(queue_url: str) -> str:
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


def _list_failures(failures: list[tuple[str, str, str]], limit: int = 20) -> str:
    shown = "; ".join(f"{mid} ({code}: {text})" for mid, code, text in failures[:limit])
    return shown + (f"; and {len(failures) - limit} more" if len(failures) > limit else "")


def _redrive_target(policy: str | None) -> str:
    try:
        return str(json.loads(policy or "{}").get("deadLetterTargetArn", ""))
    except (ValueError, AttributeError):
        return ""


def _received_message(queue_url: str, raw: dict[str, Any]) -> ReceivedMessage:
    """Normalise one received SQS message; headers and properties are JSON-safe (invariant 10)."""
    headers: dict[str, Any] = {}
    for name, attribute in (raw.get("MessageAttributes") or {}).items():
        shaped: dict[str, Any] = {"DataType": attribute.get("DataType", "")}
        if "BinaryValue" in attribute:
            shaped["BinaryValue"] = json_safe(attribute["BinaryValue"])
        else:
            shaped["StringValue"] = json_safe(attribute.get("StringValue", ""))
        headers[str(name)] = shaped
    properties: dict[str, Any] = json_safe(dict(raw.get("Attributes") or {}))
    properties["md5_of_body"] = raw.get("MD5OfBody", "")
    properties["queue_url"] = queue_url
    return ReceivedMessage(
        identity=raw["MessageId"],
        body=(raw.get("Body") or "").encode("utf-8"),
        headers=headers,
        properties=properties,
        receipt=raw["ReceiptHandle"],
    )


def _entry(index: int, message: OutgoingMessage, *, fifo: bool) -> tuple[dict[str, Any], int, str]:
    """The send_message_batch entry for one message, its payload size, and why it cannot be sent
    ('' when it can). Never alters the body: invariant 2 confirms the bytes that were captured."""
    try:
        body = message.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            {},
            0,
            (
                f"body is not valid UTF-8 (byte {exc.start}); SQS message bodies must be Unicode text,"
                " so the message was not sent rather than altered"
            ),
        )
    if not body:
        return {}, 0, "body is empty; SQS needs at least one character"
    bad = _FORBIDDEN_CHAR.search(body)
    if bad:
        return (
            {},
            0,
            (
                f"body holds U+{ord(bad.group()):04X} at character {bad.start()}, which SQS does not accept;"
                " the message was not sent rather than altered"
            ),
        )
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": body}
    if fifo:
        group = str(message.properties.get("message_group_id") or "")
        if not group:
            return {}, 0, "FIFO queue: properties['message_group_id'] is missing, so the message was not sent"
        entry["MessageGroupId"] = group
        dedupe = str(message.properties.get("deduplication_id") or message.headers.get("x-replay-id") or "")
        if dedupe:
            entry["MessageDeduplicationId"] = dedupe
    attributes = message_attributes(message.headers)
    if attributes:
        entry["MessageAttributes"] = attributes
    size = len(body.encode("utf-8")) + sum(_attribute_size(n, a) for n, a in attributes.items())
    return entry, size, ""


def message_attributes(headers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """SQS message attributes for these headers; at most 10 (see the module docstring for the
    ``x-original-headers`` overflow rule). Header order is kept."""
    direct: dict[str, dict[str, Any]] = {}
    odd: dict[str, Any] = {}
    for name, value in headers.items():
        attribute = _attribute(value)
        if attribute is None:
            continue
        if _valid_name(str(name)) and attribute:
            direct[str(name)] = attribute
        else:
            odd[str(name)] = value
    if odd and OVERFLOW_HEADER in direct:
        odd[OVERFLOW_HEADER] = headers[OVERFLOW_HEADER]
        del direct[OVERFLOW_HEADER]
    if len(direct) + (1 if odd else 0) > MAX_ATTRIBUTES:
        kept = {name: direct[name] for name in REPLAY_HEADERS if name in direct}
        odd = {name: value for name, value in headers.items() if name not in kept and _attribute(value) is not None}
        direct = kept
    if odd:
        encoded = json.dumps(json_safe(odd), ensure_ascii=True, separators=(",", ":"))
        direct[OVERFLOW_HEADER] = {"DataType": "String", "StringValue": encoded}
    return direct


def _attribute(value: Any) -> dict[str, Any] | None:
    """One header as an SQS attribute: None when empty (skipped), {} when SQS would reject it
    (it then travels in x-original-headers)."""
    if isinstance(value, dict) and "DataType" in value:
        data_type = str(value.get("DataType") or "")
        base = data_type.split(".", 1)[0]
        if base == "Binary":
            raw = _binary(value.get("BinaryValue"))
            return None if not raw else {"DataType": data_type, "BinaryValue": raw}
        text = value.get("StringValue")
        if text is None or text == "":
            return None
        if base not in ("String", "Number") or _FORBIDDEN_CHAR.search(str(text)):
            return {}
        return {"DataType": data_type, "StringValue": str(text)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"DataType": "Binary", "BinaryValue": bytes(value)} if value else None
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    if not text:
        return None
    return {} if _FORBIDDEN_CHAR.search(text) else {"DataType": "String", "StringValue": text}


def _binary(value: Any) -> bytes:
    """Undo json_safe for a BinaryValue: text was UTF-8, {"$base64": ...} was anything else."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict) and isinstance(value.get("$base64"), str):
        try:
            return base64.b64decode(value["$base64"], validate=True)
        except ValueError:
            return b""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else b""


def _valid_name(name: str) -> bool:
    lowered = name.lower()
    return bool(_ATTRIBUTE_NAME.match(name)) and ".." not in name and not lowered.startswith(("aws.", "amazon."))


def _attribute_size(name: str, attribute: dict[str, Any]) -> int:
    value = attribute.get("BinaryValue", b"") or attribute.get("StringValue", "").encode("utf-8")
    return len(name.encode("utf-8")) + len(attribute["DataType"]) + len(value)


def _chunks(
    ready: list[tuple[int, dict[str, Any], int]], limit: int
) -> Iterable[list[tuple[int, dict[str, Any], int]]]:
    """At most 10 entries and ``limit`` payload bytes per chunk; an oversized entry goes alone."""
    chunk: list[tuple[int, dict[str, Any], int]] = []
    total = 0
    for item in ready:
        if chunk and (len(chunk) == BATCH_ENTRIES or total + item[2] > limit):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item[2]
    if chunk:
        yield chunk
