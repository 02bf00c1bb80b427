"""A replay run is one trace: its root span when it starts, a span per batch in that trace, and a
traceparent on every replayed message naming the batch that published it, read back from each
real broker. When the replayed messages come back to a DLQ, the capture pass that takes them
links its span to the run's trace. The worker runs in this process (the in-memory exporter sees
its spans), taking its jobs off the real queue as an RQ worker would."""

from __future__ import annotations

import pytest

from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import CaptureTrigger, DeadLetter, PlanItem, ReplayRun, RunState
from recovery.observability.replay import run_span_context
from recovery.observability.tracing import parse_traceparent
from tests.helpers import JobRunner, wait_until
from tests.recovery.replay.helpers import approved_plan, captured_letters, start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
LETTERS = 12


def _run_jobs_until(predicate) -> None:
    runner = JobRunner()
    runner.start()
    try:
        assert wait_until(predicate, timeout=60)
    finally:
        runner.stop()
    assert not runner.errors, runner.errors


def test_a_run_is_one_trace_carried_by_every_replayed_message(harness, make_user, test_redis, spans) -> None:
    dlq, _letters = captured_letters(harness, LETTERS)
    target = harness.target()
    plan, _author = approved_plan(harness, dlq, target, make_user, batch_size=5)
    run = start(plan, make_user)
    _run_jobs_until(lambda: ReplayRun.objects.get(pk=run.pk).state == RunState.COMPLETED_NOT_VERIFIED)

    finished = spans.get_finished_spans()
    trace_id, root = int(run.trace_id, 16), run_span_context(run)
    runs = [s for s in finished if s.name == "replay.run"]
    assert [(s.context.trace_id, s.context.span_id) for s in runs] == [(trace_id, root.span_id)]
    batches = [s for s in finished if s.name == "replay.batch"]
    assert len(batches) >= 3  # batches of at most 5
    assert {s.context.trace_id for s in batches} == {trace_id}
    assert {s.parent.span_id for s in batches} == {root.span_id}
    assert sum(s.attributes["recovery.batch.size"] for s in batches) == LETTERS
    assert sum(s.attributes["recovery.batch.published"] for s in batches) == LETTERS
    assert {s.attributes["recovery.run.id"] for s in batches} == {run.pk}
    jobs = {s.context.span_id for s in finished if s.name == "job.replay_worker"}
    assert jobs and all(link.context.span_id in jobs for s in batches for link in s.links)
    capture = [s for s in finished if s.name == "capture.pass" and s.attributes["recovery.dlq"] == dlq.name]
    assert capture and capture[0].attributes["recovery.capture.captured"] == LETTERS

    # The target's consumer failed them all: capture them back from the target, each with the
    # traceparent it carried there, read from the real broker.
    spans.clear()
    back = harness.dlq_at(target.routing_key or target.name)  # RabbitMQ: the queue the default exchange routes to
    capture_pass_run(pass_id=capture_pass_request(actor="cli:test", dlq=back, trigger=CaptureTrigger.CLI).pk)
    returned = list(DeadLetter.objects.filter(dlq=back))
    assert len(returned) == LETTERS
    # The batch's span, or (with the pika instrumentation on) pika's publish span under it.
    batch_ids = {s.context.span_id for s in batches}
    publishers = batch_ids | {s.context.span_id for s in finished if s.parent and s.parent.span_id in batch_ids}
    for letter in returned:
        context = parse_traceparent(letter.headers["traceparent"])
        assert context.trace_id == trace_id and context.span_id in publishers

    (pass_span,) = [s for s in spans.get_finished_spans() if s.name == "capture.pass"]
    assert pass_span.attributes["recovery.capture.redeadlettered"] == LETTERS
    assert [link.context.trace_id for link in pass_span.links] == [trace_id]
    replay_ids = set(PlanItem.objects.filter(plan=plan).values_list("replay_id", flat=True))
    assert pass_span.links[0].attributes["recovery.replay_id"] in replay_ids
