"""The rule preview: the same matcher as classification over the latest letters, narrowed by an
SQL prefilter that never drops a letter the conditions can match."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recovery.classification.selectors import rule_order_moved, rule_preview
from recovery.errors import InvalidInput
from recovery.models import ClassificationRule
from tests.factories import ClassificationRuleFactory, DeadLetterQueueFactory

pytestmark = pytest.mark.django_db


def test_it_counts_matches_and_samples_the_newest(make_letter) -> None:
    now = datetime.now(UTC)
    hits = [
        make_letter(error_class="SocketTimeoutException", captured_at=now - timedelta(minutes=n)) for n in range(12)
    ]
    make_letter(error_class="KeyError")
    preview = rule_preview(conditions=[{"field": "error_class", "op": "regex", "value": "Timeout"}])
    assert (preview.matched, preview.window, preview.complete) == (12, 13, True)
    assert [x.pk for x in preview.sample] == [x.pk for x in hits[:10]]


def test_it_looks_at_the_latest_window_only_and_says_so(make_letter) -> None:
    now = datetime.now(UTC)
    for n in range(5):
        make_letter(error_class="Timeout", captured_at=now - timedelta(hours=n))
    preview = rule_preview(conditions=[{"field": "error_class", "op": "eq", "value": "Timeout"}], window=3)
    assert (preview.matched, preview.window, preview.complete) == (3, 3, False)


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "header", "name": "X-TENANT", "op": "eq", "value": "acme"},
        {"field": "header", "name": "x-tenant", "op": "exists"},
        {"field": "attempt_count", "op": "gte", "value": 3},
        {"field": "age", "op": "older_than", "value": 3600},
        {"field": "origin", "op": "eq", "value": "kafka:orders"},
    ],
)
def test_the_prefilter_keeps_every_match(make_letter, condition) -> None:
    match = make_letter(
        headers={"x-Tenant": "acme"}, attempt_count=5, captured_at=datetime.now(UTC) - timedelta(hours=2)
    )
    make_letter(headers={"other": 1}, attempt_count=1, origin="kafka:payments")
    preview = rule_preview(conditions=[condition])
    assert [x.pk for x in preview.sample] == [match.pk]


def test_it_filters_by_dlq(make_letter) -> None:
    other = DeadLetterQueueFactory()
    mine = make_letter(target=other)
    make_letter()
    assert [x.pk for x in rule_preview(conditions=[{"field": "dlq", "op": "in", "value": [other.pk]}]).sample] == [
        mine.pk
    ]


def test_it_counts_what_an_earlier_rule_takes_first(make_letter) -> None:
    ClassificationRuleFactory(
        name="earlier", position=10, category="transient", disposition="replay",
        conditions=[{"field": "error_message", "op": "regex", "value": "read"}],
    )  # fmt: skip
    later = ClassificationRuleFactory(name="later", position=20, category="poison")
    make_letter(error_class="Timeout", error_message="read timed out")
    make_letter(error_class="Timeout", error_message="connect timed out")
    conditions = [{"field": "error_class", "op": "eq", "value": "Timeout"}]
    assert rule_preview(conditions=conditions).shadowed == 2  # a new rule goes last, after the catch-all
    assert rule_preview(conditions=conditions, rule=later).shadowed == 1
    first = ClassificationRule.objects.get(name="earlier")
    assert rule_preview(conditions=conditions, rule=first).shadowed == 0


def test_hostile_bodies_preview_safely(make_letter) -> None:
    make_letter(body=b"[" * 10_000 + b"]" * 10_000)
    make_letter(body=b"\xff" * (10 << 20))
    preview = rule_preview(conditions=[{"field": "body", "op": "not_json"}])
    assert preview.matched == 2


def test_bad_conditions_are_an_error() -> None:
    with pytest.raises(InvalidInput, match="condition 1"):
        rule_preview(conditions=[{"field": "nope"}])


def test_moving_a_rule() -> None:
    rules = [ClassificationRuleFactory(name=n, position=p) for n, p in (("a", 10), ("b", 20), ("c", 30))]
    a, b, c = (r.pk for r in rules)
    assert rule_order_moved(rule=rules[2], offset=-1) == [a, c, b]
    assert rule_order_moved(rule=rules[0], offset=-1) == [a, b, c]
    assert rule_order_moved(rule=rules[0], offset=1) == [b, a, c]
