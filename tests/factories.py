"""Test data factories (factory_boy): one place that knows how to write a valid row of each model
tests build by hand. ``XFactory()`` saves a row, ``XFactory.build()`` makes an unsaved one;
keyword arguments override any default, ``broker__kind=...`` reaches into a related factory.

Defaults describe the plainest case: a Kafka broker nobody listens on, a DLQ on it captured as
its kind needs, a letter as capture stores it, a plan drafted by an operator. A test names only
what it is about.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import factory
from django.conf import settings
from django.utils import timezone
from factory.django import DjangoModelFactory, Password

from recovery.classification import subject
from recovery.models import (
    AttemptState,
    Broker,
    BrokerKind,
    CaptureMode,
    Category,
    ClassificationRule,
    DeadLetter,
    DeadLetterQueue,
    Disposition,
    DrillRun,
    DrillTrigger,
    FingerprintGroup,
    LedgerEntry,
    PlanItem,
    PlanItemState,
    ReplayPlan,
    ReplayRun,
    RunState,
)
from recovery.permissions import Role, role_groups

PASSWORD = "correct-horse-battery-staple"  # every UserFactory user's, unless told otherwise

# Endpoints where nothing listens (port 1): a broker row whose broker is never reached.
UNREACHABLE = {
    BrokerKind.KAFKA: "127.0.0.1:1",
    BrokerKind.RABBITMQ: "amqp://127.0.0.1:1/",
    BrokerKind.SQS: "http://127.0.0.1:1",
}


class UserFactory(DjangoModelFactory):
    """A user holding ``roles`` (their role groups; none by default) who signs in with PASSWORD.
    ``password=None`` leaves the password unusable (and hashes nothing), for users who never sign
    in: the worker processes some tests start keep Django's slow default hasher."""

    class Meta:
        model = settings.AUTH_USER_MODEL
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = Password(PASSWORD)

    @factory.post_generation
    def roles(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create and extracted:
            groups = role_groups()
            self.groups.set([groups[role] for role in extracted])


class BrokerFactory(DjangoModelFactory):
    """A broker row of ``kind`` (Kafka by default) whose endpoint nobody listens on."""

    class Meta:
        model = Broker

    name = factory.Sequence(lambda n: f"broker-{n}")
    kind = BrokerKind.KAFKA
    endpoint = factory.LazyAttribute(lambda o: UNREACHABLE[o.kind])


def _local(kind: str) -> dict[str, Any]:
    """Endpoint, credentials reference and options of this checkout's local broker of ``kind``
    (the LOCAL_* variables of .local/env), as recovery.brokers.services.local_brokers_configure
    sets them for `make run`."""
    env = os.environ
    if kind == BrokerKind.RABBITMQ:
        options = {"management_url": env["LOCAL_RABBITMQ_MANAGEMENT_URL"]}
        return {"endpoint": env["LOCAL_RABBITMQ_URL"], "credentials_ref": "env:LOCAL_RABBITMQ", "options": options}
    if kind == BrokerKind.SQS:
        options = {"region": env["LOCAL_SQS_REGION"]}
        return {"endpoint": env["LOCAL_SQS_ENDPOINT_URL"], "credentials_ref": "env:LOCAL_SQS", "options": options}
    return {"endpoint": env["LOCAL_KAFKA_BOOTSTRAP_SERVERS"], "credentials_ref": "", "options": {}}


class LocalBrokerFactory(BrokerFactory):
    """A broker row for this checkout's real local broker of ``kind``, set up as `make run` sets
    it up; ``extra_options`` are added to its client options."""

    class Params:
        extra_options = {}

    endpoint = factory.LazyAttribute(lambda o: _local(o.kind)["endpoint"])
    credentials_ref = factory.LazyAttribute(lambda o: _local(o.kind)["credentials_ref"])
    options = factory.LazyAttribute(lambda o: {**_local(o.kind)["options"], **o.extra_options})


class DeadLetterQueueFactory(DjangoModelFactory):
    """A DLQ row on ``broker`` (a new unreachable Kafka broker by default), captured as its kind
    needs: on Kafka by committing the offsets of a consumer group of its own ("<name>-capture"),
    elsewhere by draining."""

    class Meta:
        model = DeadLetterQueue

    broker = factory.SubFactory(BrokerFactory)
    name = factory.Sequence(lambda n: f"dlq-{n}")
    address = "orders.DLT"
    consumer_group = factory.LazyAttribute(lambda o: f"{o.name}-capture" if o.broker.kind == BrokerKind.KAFKA else "")
    capture_mode = factory.LazyAttribute(
        lambda o: CaptureMode.OFFSETS if o.broker.kind == BrokerKind.KAFKA else CaptureMode.DRAIN
    )


class DeadLetterFactory(DjangoModelFactory):
    """A letter as capture stores it, unclassified: a small JSON body with its size and SHA-256,
    a Kafka-style identity (topic/partition/offset), captured now. ``search_text`` is what
    classification would store for its error and body, so the letters search finds it.

    ``timed_out=True``: it failed with a TimeoutError (a message of its own).
    ``replayable=True``: a transient failure from the orders topic, classified for replay (a plan
    over it sends it back to kafka:orders on its DLQ's broker)."""

    class Meta:
        model = DeadLetter

    class Params:
        timed_out = factory.Trait(
            error_class="TimeoutError", error_message=factory.Sequence(lambda n: f"timed out after {n} ms")
        )
        replayable = factory.Trait(origin="kafka:orders", category=Category.TRANSIENT, disposition=Disposition.REPLAY)

    dlq = factory.SubFactory(DeadLetterQueueFactory)
    identity = factory.LazyAttributeSequence(lambda o, n: f"kafka:{o.dlq.address}/0/{n}")
    body = factory.Sequence(lambda n: b'{"order": %d}' % n)
    body_size = factory.LazyAttribute(lambda o: len(o.body))
    content_hash = factory.LazyAttribute(lambda o: hashlib.sha256(o.body).hexdigest())
    captured_at = factory.LazyFunction(timezone.now)
    error_class = ""
    error_message = ""
    search_text = factory.LazyAttribute(
        lambda o: subject.search_text(
            subject.LetterFacts(error_class=o.error_class, error_message=o.error_message, body=o.body)
        )
    )


class FingerprintGroupFactory(DjangoModelFactory):
    """A failure group first and last seen now, with no letters counted unless told."""

    class Meta:
        model = FingerprintGroup

    fingerprint = factory.Sequence(lambda n: f"{n:064x}")
    first_seen = factory.LazyFunction(timezone.now)
    last_seen = factory.SelfAttribute("first_seen")


class ClassificationRuleFactory(DjangoModelFactory):
    """An enabled rule without conditions (it matches every letter) that files letters as unknown
    and holds them; rules are tried in the order they were made."""

    class Meta:
        model = ClassificationRule

    name = factory.Sequence(lambda n: f"rule-{n}")
    position = factory.Sequence(lambda n: 10 * (n + 1))
    category = Category.UNKNOWN
    disposition = Disposition.HOLD


class ReplayPlanFactory(DjangoModelFactory):
    """A draft plan, written straight into the store (no selection frozen, no content hash),
    authored by a new operator who cannot sign in."""

    class Meta:
        model = ReplayPlan

    name = factory.Sequence(lambda n: f"plan {n}")
    author = factory.SubFactory(UserFactory, password=None, roles=[Role.OPERATOR])


class PlanItemFactory(DjangoModelFactory):
    """An included item of ``plan``: a new letter (disposition replay), no target unless given
    (recovery.replay.targets freezes one as {"broker", "name", "routing_key", "vhost"}), and a
    replay id shaped like the ones freezing makes ("r" and 32 hex digits)."""

    class Meta:
        model = PlanItem

    plan = factory.SubFactory(ReplayPlanFactory)
    letter = factory.SubFactory(DeadLetterFactory, disposition=Disposition.REPLAY)
    state = PlanItemState.INCLUDED
    replay_id = factory.Sequence(lambda n: f"r{n:032x}")


class ReplayRunFactory(DjangoModelFactory):
    """A run of ``plan`` that started now and is running; ``plan_hash`` is the plan's content hash
    (a placeholder for a plan never submitted)."""

    class Meta:
        model = ReplayRun

    plan = factory.SubFactory(ReplayPlanFactory)
    state = RunState.RUNNING
    plan_hash = factory.LazyAttribute(lambda o: o.plan.content_hash or "x")
    started_at = factory.LazyFunction(timezone.now)


class LedgerEntryFactory(DjangoModelFactory):
    """A ledger row of ``run`` for ``item`` (a new item of the run's plan by default): pending,
    or published when ``published_at`` is given."""

    class Meta:
        model = LedgerEntry

    run = factory.SubFactory(ReplayRunFactory)
    item = factory.SubFactory(PlanItemFactory, plan=factory.SelfAttribute("..run.plan"))
    letter = factory.SelfAttribute("item.letter")
    published_at = None
    state = factory.LazyAttribute(lambda o: AttemptState.PUBLISHED if o.published_at else AttemptState.PENDING)


class DrillRunFactory(DjangoModelFactory):
    """A run of ``drill`` (required: drills are made through recovery.drills.services, which
    validates and hashes them), started by hand and queued unless told otherwise."""

    class Meta:
        model = DrillRun

    trigger = DrillTrigger.MANUAL
