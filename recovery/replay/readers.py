"""Who else receives a record replayed to a Kafka topic (issue 15, part 5).

Replaying to a Kafka topic delivers the record to every consumer group that reads the topic, not
only to the one that failed on it. The dry run and the frozen plan therefore name, per Kafka
target, the consumer groups with committed offsets on the topic (asked of the cluster) and the
groups the dead-letter writers recorded on the letters (Spring's original consumer group, a share
group), so the approver knows who will process the replayed records.

Reads only; the cluster is asked within a few seconds (invariant 15: a configured broker may be
called inside a web request, bounded), and a broker that does not answer is reported, not raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models.fields.json import KeyTextTransform

from recovery.brokers.base import BrokerError
from recovery.brokers.registry import broker_session
from recovery.models import Broker, BrokerKind, PlanItem, PlanItemState, ReplayPlan
from recovery.replay import targets
from recovery.triage.filters import LetterFilter

CLUSTER_TIMEOUT = 3.0

# described target -> (broker id, topic, consumer groups recorded on the letters)
KafkaTargets = dict[str, tuple[int, str, set[str]]]


@dataclass(frozen=True)
class TopicReaders:
    """The consumer groups that will read records replayed to one Kafka topic."""

    target: str
    topic: str
    cluster_groups: list[str] = field(default_factory=list)
    recorded_groups: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def others(self) -> list[str]:
        """Groups on the cluster besides the ones the letters recorded as the failed reader."""
        return [g for g in self.cluster_groups if g not in self.recorded_groups]


def may_target_kafka(plan: ReplayPlan) -> bool:
    """Whether a draft can have a Kafka target: its override broker, or a letter's DLQ, is on Kafka
    (a target is always on one of these)."""
    if plan.target_broker_id and (plan.target_address or plan.target_routing_key):  # the override applies
        return Broker.objects.filter(pk=plan.target_broker_id, kind=BrokerKind.KAFKA).exists()
    return LetterFilter.from_json(plan.selection).apply().filter(dlq__broker__kind=BrokerKind.KAFKA).exists()


def frozen_kafka_targets(plan: ReplayPlan) -> KafkaTargets:
    """The Kafka targets of a frozen plan's included items, with the groups their letters recorded."""
    kafka = {pk: name for pk, name in Broker.objects.filter(kind=BrokerKind.KAFKA).values_list("id", "name")}
    if not kafka:
        return {}
    rows = (
        PlanItem.objects.filter(plan=plan, state=PlanItemState.INCLUDED, target__broker__in=list(kafka))
        .annotate(group=KeyTextTransform("consumer_group", "letter__failure_extras"))
        .values_list("target", "group")
        .distinct()
    )
    found: KafkaTargets = {}
    for target, group in rows:
        _, _, recorded = found.setdefault(targets.describe(target, kafka), (target["broker"], target["name"], set()))
        if group:
            recorded.add(group)
    return found


def kafka_readers(kafka_targets: KafkaTargets, *, timeout: float = CLUSTER_TIMEOUT) -> list[TopicReaders]:
    """Per Kafka target, the groups that read its topic on the cluster and those the letters name."""
    brokers = Broker.objects.in_bulk({broker_id for broker_id, _, _ in kafka_targets.values()})
    found = []
    for described, (broker_id, topic, recorded) in sorted(kafka_targets.items()):
        broker = brokers.get(broker_id)
        groups: list[str] = []
        error = ""
        try:
            if broker is None:
                raise BrokerError(f"broker {broker_id} no longer exists")
            with broker_session(broker, timeout=timeout) as adapter:
                groups = adapter.consumer_groups_reading(topic)  # type: ignore[attr-defined]
        except BrokerError as exc:
            error = f"could not ask the cluster which consumer groups read {topic}: {exc}"
        found.append(TopicReaders(described, topic, groups, sorted(recorded), error))
    return found
