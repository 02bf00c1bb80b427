"""A run paused by a stop condition shows in the metrics (the trip counted once, the paused run
flagged for alerting) and in the run's trace."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from recovery.models import ReplayRun, RunState
from recovery.observability import metrics
from recovery.replay.engine import Worker
from tests.recovery.replay.helpers import approved_plan, captured_letters, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKEN = "scrape-token-" + "c" * 32


def test_a_stop_condition_trip_is_counted_flagged_and_traced(rabbit, make_user, settings, test_redis, spans) -> None:
    trips = metrics.STOP_CONDITION_TRIPS.labels("max_duration", "pause")
    before = trips._value.get()  # noqa: SLF001 - this process's own count
    dlq, _letters = captured_letters(rabbit, 20)
    plan, _author = approved_plan(rabbit, dlq, rabbit.target(), make_user, rate_per_second=5, batch_size=1,
                                  stop_conditions=[{"condition": "max_duration", "seconds": 1}])  # fmt: skip
    run = start(plan, make_user)
    Worker(run.pk, 0).run()
    run = ReplayRun.objects.get(pk=run.pk)
    assert run.state == RunState.PAUSED and "max_duration" in run.stop_reason
    assert trips._value.get() == before + 1  # noqa: SLF001

    (span,) = [s for s in spans.get_finished_spans() if s.name == "replay.stop_condition"]
    assert span.context.trace_id == int(run.trace_id, 16)
    assert list(span.attributes["recovery.stop.conditions"]) == ["max_duration"]

    settings.RECOVERY_METRICS_TOKEN = TOKEN
    body = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    flagged = {
        sample.labels["run_id"]: sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "recovery_replay_run_stopped_by_condition"
    }
    assert flagged[str(run.pk)] == 1
