"""Which letters of a plan's selection are replayed, where to, and why the others are not.

One decision function serves the dry-run (counts before submit) and the freeze (plan items on
submit), so what the operator saw is what gets frozen. Letters are decided per group of equal
(DLQ, route, state, disposition, category, other active plan): the database groups millions of
letters into a few keys, Python decides each key once, and one INSERT ... SELECT writes the items.
A route (recovery.replay.targets.route_expression) is what target resolution reads: the failure
origin, the place the broker or a framework recorded and who recorded it, the recorded consumer group.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from psycopg.types.json import Jsonb

from recovery.models import (
    ALREADY_REPLAYED_STATES,
    Broker,
    BrokerKind,
    Category,
    DeadLetterQueue,
    DeadLetterState,
    Disposition,
    PlanItemState,
    PlanState,
    ReplayPlan,
    TargetSource,
)
from recovery.replay import ordering, targets
from recovery.triage.filters import LetterFilter

ACTIVE_PLAN_STATES = (PlanState.SUBMITTED, PlanState.APPROVED, PlanState.RUNNING)
ALREADY_REPLAYED = "already replayed by an earlier plan (choose “replay again” to include)"


@dataclass(frozen=True)
class Decision:
    included: bool
    exclusion: str
    target: dict[str, Any] | None
    target_source: str = ""  # TargetSource: where the target came from (invariant 14)


@dataclass
class DryRun:
    included: int = 0
    excluded: int = 0
    by_category: Counter = field(default_factory=Counter)
    by_disposition: Counter = field(default_factory=Counter)
    exclusions: Counter = field(default_factory=Counter)
    targets: Counter = field(default_factory=Counter)  # described target -> included letters
    # (described target, TargetSource label) -> included letters: the approver sees where targets came from
    target_sources: Counter = field(default_factory=Counter)
    # described Kafka target -> (broker id, topic, consumer groups the dead-letter writers recorded)
    kafka_targets: dict[str, tuple[int, str, set[str]]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.included + self.excluded


def decide(
    plan: ReplayPlan, dlq: DeadLetterQueue, *, route: str, state: str, disposition: str, category: str,
    other_plan: int | None,
) -> Decision:  # fmt: skip
    """Excluded: discarded or oversize letters, a discard disposition, poison or hold unless the
    plan explicitly includes held letters, letters already in another active plan, letters an
    earlier plan replayed unless the plan says "replay again", and letters with no target.
    Everything else is replayed to its resolved target."""
    if state == DeadLetterState.DISCARDED:
        return Decision(False, "discarded", None)
    if state == DeadLetterState.OVERSIZE:
        return Decision(False, "oversize: its body is parked in object storage, not replayed", None)
    if disposition == Disposition.DISCARD:
        return Decision(False, "disposition discard", None)
    if not plan.include_held and category == Category.POISON:
        return Decision(False, "poison (include held letters to override)", None)
    if not plan.include_held and disposition == Disposition.HOLD:
        return Decision(False, "disposition hold (include held letters to override)", None)
    if other_plan is not None:
        return Decision(False, f"already in active plan {other_plan}", None)
    if state in (DeadLetterState.PLANNED, DeadLetterState.REPLAYING):
        return Decision(False, "in another plan that has not finished", None)
    if state in ALREADY_REPLAYED_STATES and not plan.replay_again:  # identity across plans (invariant 12)
        return Decision(False, ALREADY_REPLAYED, None)
    resolved = targets.resolve_route(plan, dlq, route)
    if resolved is None:
        return Decision(False, targets.NO_TARGET, None)
    return Decision(True, "", resolved.target, resolved.source)


_GROUPS = """
SELECT l.dlq_id, l.route, l.state, l.disposition, l.category, a.plan_id, count(*)
FROM ({selection}) AS l
LEFT JOIN LATERAL (
    SELECT i.plan_id FROM recovery_planitem i JOIN recovery_replayplan p ON p.id = i.plan_id
    WHERE i.letter_id = l.id AND i.state = 'included' AND p.state = ANY(%s) AND p.id <> %s LIMIT 1
) AS a ON true
GROUP BY 1, 2, 3, 4, 5, 6
"""

# Items are written in the DLQ's order, each with its ordering group and rank (invariant 13,
# recovery.replay.ordering), so that the ledger, claimed in id order, follows that order too.
_INSERT = """
INSERT INTO recovery_planitem (plan_id, letter_id, state, exclusion, target, target_source, replay_id, ordering_group,
                               ordering_position)
SELECT %s, l.id, d.item_state, d.exclusion, d.target, d.target_source, 'r' || md5(%s || ':' || l.id), o.grp,
       {position}
FROM ({selection}) AS l
LEFT JOIN LATERAL (
    SELECT i.plan_id FROM recovery_planitem i JOIN recovery_replayplan p ON p.id = i.plan_id
    WHERE i.letter_id = l.id AND i.state = 'included' AND p.state = ANY(%s) AND p.id <> %s LIMIT 1
) AS a ON true
JOIN unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],
            %s::jsonb[], %s::text[]) AS d(dlq_id, route, letter_state, disposition, category, other_plan, item_state,
                                          exclusion, target, target_source)
  ON d.dlq_id = l.dlq_id AND d.route = l.route AND d.letter_state = l.state AND d.disposition = l.disposition
 AND d.category = l.category AND d.other_plan IS NOT DISTINCT FROM a.plan_id
{ordering_join}
{order}
"""


def selection_sql(plan: ReplayPlan) -> tuple[str, list[Any]]:
    letters = LetterFilter.from_json(plan.selection).apply().order_by().annotate(route=targets.route_expression())
    sql, params = letters.values("id", "dlq_id", "route", "state", "disposition", "category").query.sql_with_params()
    return sql, list(params)


def _groups(plan: ReplayPlan) -> list[tuple[tuple, Decision, int]]:
    sql, params = selection_sql(plan)
    with connection.cursor() as cursor:
        cursor.execute(_GROUPS.format(selection=sql), [*params, list(ACTIVE_PLAN_STATES), plan.pk or 0])
        rows = cursor.fetchall()
    dlqs = DeadLetterQueue.objects.select_related("broker").in_bulk({row[0] for row in rows})
    out = []
    for dlq_id, route, state, disposition, category, other_plan, count in rows:
        decision = decide(
            plan, dlqs[dlq_id], route=route, state=state, disposition=disposition, category=category,
            other_plan=other_plan,
        )  # fmt: skip
        out.append(((dlq_id, route, state, disposition, category, other_plan), decision, count))
    return out


def dry_run(plan: ReplayPlan) -> DryRun:
    """What submitting would freeze, without writing anything."""
    return _summarise(_groups(plan))


def _summarise(groups: list[tuple[tuple, Decision, int]]) -> DryRun:
    result = DryRun()
    brokers = {pk: (name, kind) for pk, name, kind in Broker.objects.values_list("id", "name", "kind")}
    names = {pk: name for pk, (name, _kind) in brokers.items()}
    for (_dlq, route, _state, disposition, category, _other), decision, count in groups:
        result.by_category[category] += count
        result.by_disposition[disposition] += count
        if decision.included:
            result.included += count
            described = targets.describe(decision.target, names)
            result.targets[described] += count
            result.target_sources[(described, TargetSource(decision.target_source).label)] += count
            if brokers.get(decision.target["broker"], ("", ""))[1] == BrokerKind.KAFKA:
                _, _, recorded = result.kafka_targets.setdefault(
                    described, (decision.target["broker"], decision.target["name"], set())
                )
                recorded.update(g for g in [targets.parse_route(route).consumer_group] if g)
        else:
            result.excluded += count
            result.exclusions[decision.exclusion] += count
    return result


def freeze(plan: ReplayPlan) -> DryRun:
    """Write the plan's items (inside the caller's transaction); returns the counts written."""
    groups = _groups(plan)
    columns: list[list[Any]] = [[] for _ in range(10)]
    for key, decision, _count in groups:
        values = (
            *key,
            PlanItemState.INCLUDED if decision.included else PlanItemState.EXCLUDED,
            decision.exclusion,
            Jsonb(decision.target or {}),
            decision.target_source,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    sql, params = selection_sql(plan)
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT.format(
                selection=sql,
                position=ordering.POSITION,
                ordering_join=ordering.ORDERING_JOIN,
                order=ordering.FREEZE_ORDER,
            ),
            [plan.pk, str(plan.pk), *params, list(ACTIVE_PLAN_STATES), plan.pk, *columns],
        )
    return _summarise(groups)
