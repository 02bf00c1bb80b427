"""The drill's failing consumer: a real consumer of the drill's work queue/topic, through the
broker adapter, that fails messages the way an application does so that the broker itself
(SQS redrive, RabbitMQ dead-lettering) or, on Kafka, the consumer (as Spring Kafka's
DeadLetterPublishingRecoverer does) puts them in the DLQ.

- ``ok`` messages are processed and acked/deleted/committed.
- ``transient`` messages fail until the replay: a copy carrying ``x-replay-id`` succeeds, unless
  the drill says the consumer stays broken. The consumer dedupes on ``x-replay-id``: a second
  delivery of one replay id is acked and counted as an explained duplicate, never processed twice.
- ``poison`` bodies fail to parse, every time.

What it sees is kept per sequence number in the run's ``observations`` (JSON on the DrillRun), so
the verification can count lost and duplicated messages across the run's jobs.
"""

from __future__ import annotations

import struct
from typing import Any

from recovery.brokers.base import DlqAddress, OutgoingMessage, ReceivedMessage, Target
from recovery.drills import scenario
from recovery.drills.validation import is_drill_queue
from recovery.errors import BrokerError
from recovery.models import BrokerKind, Drill


def consumer_group(drill: Drill) -> str:
    """The Kafka consumer group of the drill's application (its position survives between runs)."""
    return f"drill-{drill.name}-app"


def _bump(table: dict[str, Any], seq: int, amount: int = 1) -> None:
    table[str(seq)] = table.get(str(seq), 0) + amount


class DrillConsumer:
    """One poll loop of the drill's application, for the length of a job."""

    def __init__(self, adapter: Any, drill: Drill, run_id: int, observations: dict[str, Any]) -> None:
        self.adapter = adapter
        self.drill = drill
        self.kind = drill.broker.kind
        self.run_id = run_id
        self.obs = observations
        for key in ("deliveries", "failed", "processed", "explained_duplicates", "dead_letter_published"):
            self.obs.setdefault(key, {})
        self.obs.setdefault("foreign", 0)
        group = consumer_group(drill) if self.kind == BrokerKind.KAFKA else ""
        self.address = DlqAddress(name=drill.work_address or drill.work_queue, group=group)
        self.own_queue = is_drill_queue(drill.work_queue)

    def poll(self, *, wait_seconds: float = 1.0, max_messages: int = 50) -> int:
        """Receive one batch and settle every message of it; returns how many were received."""
        batch = self.adapter.receive(self.address, max_messages=max_messages, wait_seconds=wait_seconds)
        done, failed, foreign = [], [], []
        for message in batch:
            outcome = self._handle(message)
            (done if outcome == "done" else failed if outcome == "failed" else foreign).append(message)
        if done:
            self.adapter.remove(self.address, done)
        self._fail(failed)
        if foreign:
            # Another run's leftovers on a drill queue go; on a queue an admin lent the drill,
            # what is not the drill's is given back untouched (SQS/RabbitMQ; Kafka: own group).
            if self.own_queue or self.kind == BrokerKind.KAFKA:
                self.adapter.remove(self.address, foreign)
            else:
                self.adapter.release(self.address, foreign)
        return len(batch)

    def _handle(self, message: ReceivedMessage) -> str:
        run_id, seq, replay_id = scenario.identify(message.headers)
        if run_id != self.run_id or seq is None:
            self.obs["foreign"] += 1
            return "foreign"
        _bump(self.obs["deliveries"], seq)
        behaviour = scenario.behaviour_of(message.body)
        recovered = bool(replay_id) and self.drill.consumer_recovers
        if behaviour == scenario.POISON or (behaviour == scenario.TRANSIENT and not recovered):
            _bump(self.obs["failed"], seq)
            return "failed"
        processed = self.obs["processed"].setdefault(str(seq), [])
        if replay_id and replay_id in processed:
            _bump(self.obs["explained_duplicates"], seq)  # the same replayed copy again: deduped on its id
        else:
            processed.append(replay_id)
        return "done"

    def _fail(self, messages: list[ReceivedMessage]) -> None:
        """Fail as the application would: SQS makes it visible again (the redrive policy moves it
        on a later receive), RabbitMQ rejects it to the dead-letter exchange, Kafka publishes it to
        the DLQ topic with Spring's headers (confirmed) and then commits past it."""
        if not messages:
            return
        if self.kind == BrokerKind.SQS:
            self.adapter.release(self.address, messages)
        elif self.kind == BrokerKind.RABBITMQ:
            self.adapter.reject(self.address, messages)
        else:
            self._publish_failures(messages)

    def _publish_failures(self, messages: list[ReceivedMessage]) -> None:
        outgoing = [self._dead_letter(m) for m in messages]
        results = self.adapter.publish(Target(name=self.drill.dead_letter_queue), outgoing)
        confirmed = [m for m, r in zip(messages, results, strict=True) if r.confirmed]
        unconfirmed = [m for m, r in zip(messages, results, strict=True) if not r.confirmed]
        if confirmed:
            self.adapter.remove(self.address, confirmed)
            for message in confirmed:
                _bump(self.obs["dead_letter_published"], scenario.identify(message.headers)[1])
        if unconfirmed:
            self.adapter.release(self.address, unconfirmed)  # read again and retried: nothing lost
            errors = "; ".join(r.error for r in results if not r.confirmed)
            raise BrokerError(f"the DLQ topic {self.drill.dead_letter_queue} did not confirm: {errors}"[:500])

    def _dead_letter(self, message: ReceivedMessage) -> OutgoingMessage:
        """The failed record as Spring Kafka's recoverer publishes it: same key, value and headers,
        plus kafka_dlt-* (partition as a 4-byte int, offset as an 8-byte long, big-endian)."""
        behaviour = scenario.behaviour_of(message.body)
        error_class, error_message = scenario.FAILURES[scenario.POISON if behaviour == scenario.POISON else "transient"]
        props = message.properties
        headers = {
            **message.headers,
            "kafka_dlt-original-topic": props.get("topic", self.drill.work_queue),
            "kafka_dlt-original-partition": struct.pack(">i", int(props.get("partition") or 0)),
            "kafka_dlt-original-offset": struct.pack(">q", int(props.get("offset") or 0)),
            "kafka_dlt-original-consumer-group": consumer_group(self.drill),
            "kafka_dlt-exception-fqcn": error_class,
            "kafka_dlt-exception-message": error_message,
        }
        key = props.get("key")
        return OutgoingMessage(body=message.body, headers=headers, properties={"key": key} if key is not None else {})
