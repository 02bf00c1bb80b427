"""What a duplicate is (issue 15, part 6): the same message delivered twice, by the producer's
message id or the original's broker identity, never equal bodies alone; the default rules never
discard a letter for being one; migration 0017's re-evaluation returns wrongly marked letters to
open, audited. Against the real brokers where a broker is involved."""

from __future__ import annotations

import struct

import pika
import pytest
from confluent_kafka import Producer

from recovery.audit.verification import verify_chain
from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.classification.duplicates import duplicate_key
from recovery.classification.reevaluate import duplicates_reevaluate
from recovery.classification.services import default_rules_install, letters_classify
from recovery.models import (
    AuditAction,
    AuditEvent,
    CaptureTrigger,
    ClassificationRule,
    ClassificationSource,
    DeadLetter,
)
from tests.factories import ClassificationRuleFactory, DeadLetterFactory
from tests.namespace import unique


def _capture_and_classify(dlq) -> list[DeadLetter]:
    capture_pass_run(pass_id=capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI).pk)
    letters_classify(dlq=dlq)
    return list(DeadLetter.objects.filter(dlq=dlq).order_by("id"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_identical_kafka_bodies_with_different_keys_and_offsets_are_not_duplicates(kafka_harness) -> None:
    default_rules_install(actor="test")
    dlq = kafka_harness.make_dlq(consumer_group=unique("dups"))
    producer = Producer({"bootstrap.servers": kafka_harness.servers, "batch.num.messages": 1, "acks": "all"})
    for offset in range(30):  # one repeated event, dead-lettered by Spring Kafka from 30 offsets
        producer.produce(
            dlq.address, key=f"customer-{offset % 3}".encode(), value=b'{"event": "price-changed", "sku": 77}',
            headers=[("kafka_dlt-original-topic", b"prices"), ("kafka_dlt-original-partition", struct.pack(">i", 0)),
                     ("kafka_dlt-original-offset", struct.pack(">q", offset)),
                     ("kafka_dlt-exception-fqcn", b"java.net.SocketTimeoutException"),
                     ("kafka_dlt-exception-message", b"Read timed out")],
        )  # fmt: skip
    assert producer.flush(30) == 0

    letters = _capture_and_classify(dlq)

    assert len(letters) == 30
    assert [x for x in letters if x.duplicate_of_id or x.category == "duplicate"] == []
    assert {(x.category, x.disposition) for x in letters} == {("transient", "replay")}


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_one_producer_message_id_captured_under_two_broker_identities_is_a_held_duplicate(rabbit) -> None:
    default_rules_install(actor="test")
    dlq = rabbit.make_dlq()
    connection, channel = rabbit._channel()
    channel.confirm_delivery()
    body = b'{"order": 1001, "amount": 5}'
    # the producer retried a publish whose confirm it never saw: one message, two deliveries
    for message_id in ("ord-1001", "ord-1001", "ord-1002"):
        channel.basic_publish("", dlq.address, body, pika.BasicProperties(message_id=message_id, delivery_mode=2))
    connection.close()

    first, again, other = _capture_and_classify(dlq)

    assert first.identity != again.identity, "two broker identities"
    assert (again.duplicate_of_id, again.category, again.disposition) == (first.pk, "duplicate", "hold")
    assert first.duplicate_of_id is None and other.duplicate_of_id is None
    assert other.category != "duplicate", "the same body under another message id is another message"


@pytest.mark.django_db
def test_no_default_rule_discards_a_letter_for_being_a_duplicate() -> None:
    from recovery.classification.defaults import DEFAULT_RULES

    assert [r["name"] for r in DEFAULT_RULES if r["category"] == "duplicate" and r["disposition"] == "discard"] == []


def test_the_key_names_the_message_not_the_body() -> None:
    common = {"kind": "kafka", "identity": "", "origin": "kafka:orders", "properties": {}, "content_hash": "h"}
    assert duplicate_key(**common, headers={}) == ""
    assert duplicate_key(**common, headers={"ce_id": "a"}) != duplicate_key(**common, headers={"ce_id": "b"})
    assert duplicate_key(**common, headers={"ce_id": "a"}) == duplicate_key(**common, headers={"ce_id": "a"})
    # a replayed copy that came back is its original's return, not its duplicate
    replayed = {"ce_id": "a", "x-replay-id": "r1"}
    assert duplicate_key(**common, headers=replayed) != duplicate_key(**common, headers={"ce_id": "a"})
    # a content-based SQS FIFO deduplication id is the body's SHA-256: it names no message
    sqs = {"kind": "sqs", "origin": "sqs:q", "headers": {}, "content_hash": "ab" * 32}
    content_based = {"MessageDeduplicationId": "AB" * 32}
    assert duplicate_key(**sqs, identity="", properties=content_based) == ""
    assert duplicate_key(**sqs, identity="sqs:m1", properties={"MessageDeduplicationId": "order-7"}) == (
        duplicate_key(**sqs, identity="sqs:m2", properties={"MessageDeduplicationId": "order-7"})
    )


def _old_mark(letter: DeadLetter, first: DeadLetter) -> None:
    """What the old rule wrote: a duplicate of the first letter with the same body, to discard."""
    DeadLetter.objects.filter(pk=letter.pk).update(
        duplicate_of=first, category="duplicate", disposition="discard", classified_by=ClassificationSource.DUPLICATE
    )


@pytest.mark.django_db
def test_the_0017_reevaluation_returns_wrongly_marked_letters_to_open_and_audits_it(dlq) -> None:
    ClassificationRuleFactory(
        name="timeouts", category="transient", disposition="replay",
        conditions=[{"field": "error_class", "op": "regex", "value": "Timeout"}],
    )  # fmt: skip
    body = b'{"event": "price-changed"}'
    make = lambda **kw: DeadLetterFactory(dlq=dlq, body=body, origin="kafka:prices", error_class="TimeoutError", **kw)  # noqa: E731
    first = make(headers={"message-id": "m-1"})
    same_body = [make(headers={"message-id": f"m-{n}"}) for n in (2, 3)]
    no_id = make()
    redelivered = make(headers={"message-id": "m-1"})
    letters_classify(letter_ids=[first.pk])
    for letter in (*same_body, no_id, redelivered):
        _old_mark(letter, first)
    before = AuditEvent.objects.count()

    changed = duplicates_reevaluate(rule_model=ClassificationRule, event_model=AuditEvent)

    assert (changed["returned_to_open"], changed["kept_as_duplicates"], changed["no_longer_discarded"]) == (3, 1, 1)
    rows = {x.pk: x for x in DeadLetter.objects.all()}
    for letter in (*same_body, no_id):
        row = rows[letter.pk]
        assert (row.duplicate_of_id, row.category, row.disposition, row.classified_by) == (
            None, "transient", "replay", "rule"
        )  # fmt: skip
    row = rows[redelivered.pk]
    assert (row.duplicate_of_id, row.category, row.disposition) == (first.pk, "duplicate", "hold")
    [event] = AuditEvent.objects.filter(seq__gt=before)
    assert event.action == AuditAction.RECLASSIFY_FINISHED and event.actor_name == "system:migration"
    assert sorted(event.after["returned_ids"]) == sorted(x.pk for x in (*same_body, no_id))
    assert verify_chain().ok
    assert duplicates_reevaluate(rule_model=ClassificationRule, event_model=AuditEvent)["returned_to_open"] == 0
    assert AuditEvent.objects.filter(seq__gt=before).count() == 1, "a second pass changes nothing, writes nothing"


@pytest.mark.django_db
def test_migration_0017_runs_the_reevaluation_on_its_historical_models(dlq) -> None:
    import importlib

    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    migration = importlib.import_module("recovery.migrations.0017_targets_and_duplicates")
    apps = MigrationLoader(connection).project_state(("recovery", "0017_targets_and_duplicates")).apps
    first = DeadLetterFactory(dlq=dlq, body=b"same", headers={"message-id": "a"})
    other = DeadLetterFactory(dlq=dlq, body=b"same", headers={"message-id": "b"})
    letters_classify(letter_ids=[first.pk])
    _old_mark(other, first)

    migration.reevaluate_duplicates(apps, None)

    other.refresh_from_db()
    assert (other.duplicate_of_id, other.category, other.classified_by) == (None, "unknown", "default")
    assert AuditEvent.objects.filter(actor_name="system:migration").count() == 1
    assert verify_chain().ok
