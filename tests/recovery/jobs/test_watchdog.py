"""The one job watchdog (recovery/jobs/watchdog.py) on real rows, queues and a real RabbitMQ: a
lost capture job no longer blocks its DLQ, lost jobs that can continue are enqueued again until
their retries run out, and rows whose jobs are alive are left alone."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_rq
import pytest
from django.utils import timezone

from recovery.capture.services import capture_due_passes_enqueue, capture_pass_request
from recovery.errors import InvalidInput
from recovery.jobs.lifecycle import job_finish
from recovery.jobs.watchdog import LostJob, lost_jobs_recover
from recovery.models import CapturePass, CaptureTrigger, DeadLetter, JobState, TriageJob, TriageJobKind
from tests.brokers.harness import RabbitHarness
from tests.helpers import run_queued_jobs

pytestmark = pytest.mark.django_db(transaction=True)


def _long_ago(settings: Any, seconds_setting: str) -> Any:
    return timezone.now() - timedelta(seconds=getattr(settings, seconds_setting) + 5)


def test_a_lost_capture_jobs_pass_is_retired_and_the_dlq_captured_by_the_next_pass(
    rabbit: RabbitHarness, settings: Any, test_redis: Any
) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    dlq = rabbit.make_dlq(capture_interval=60)
    rabbit.fill(dlq, [(f'{{"n": {i}}}'.encode(), {}) for i in range(3)])
    (lost,) = capture_due_passes_enqueue()
    test_redis.delete("rq:queue:capture")  # the job vanished (a Redis restart, a worker died mid-dequeue)
    with pytest.raises(InvalidInput, match="already queued or running"):
        capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI)  # a young queued pass waits
    assert lost_jobs_recover() == [], "not lost yet: it may still be waiting for a busy worker"
    CapturePass.objects.filter(pk=lost.pk).update(enqueued_at=_long_ago(settings, "RECOVERY_JOB_LOST_AFTER"))

    assert lost_jobs_recover() == [LostJob(model="CapturePass", pk=lost.pk, action="retired")]

    lost.refresh_from_db()
    assert lost.state == JobState.FAILED and "job lost: queued, never started" in lost.error
    dlq.refresh_from_db()
    assert dlq.next_capture_at <= timezone.now(), "the DLQ is due again at once"
    (following,) = capture_due_passes_enqueue()  # the scheduler's next tick
    run_queued_jobs("capture")
    following.refresh_from_db()
    assert following.state == JobState.SUCCEEDED and following.captured == 3 and following.processed == 3
    assert DeadLetter.objects.filter(dlq=dlq).count() == 3
    assert rabbit.still_on_broker(dlq) == 0


def test_a_running_pass_without_a_heartbeat_is_retired_and_a_beating_one_left_alone(
    rabbit: RabbitHarness, settings: Any
) -> None:
    silent_dlq, beating_dlq = rabbit.make_dlq(), rabbit.make_dlq()
    silent = CapturePass.objects.create(dlq=silent_dlq, trigger=CaptureTrigger.SCHEDULER, state=JobState.RUNNING,
                                        heartbeat_at=_long_ago(settings, "RECOVERY_JOB_STALE_AFTER"))  # fmt: skip
    beating = CapturePass.objects.create(dlq=beating_dlq, trigger=CaptureTrigger.SCHEDULER, state=JobState.RUNNING,
                                         heartbeat_at=timezone.now())  # fmt: skip

    assert lost_jobs_recover() == [LostJob(model="CapturePass", pk=silent.pk, action="retired")]
    silent.refresh_from_db()
    beating.refresh_from_db()
    assert silent.state == JobState.FAILED and "worker lost (no heartbeat)" in silent.error
    assert beating.state == JobState.RUNNING
    # the silent pass's worker turns out to be alive after all: it cannot move the retired row
    assert not job_finish(CapturePass, silent.pk)
    silent.refresh_from_db()
    assert silent.state == JobState.FAILED


def test_a_lost_triage_job_is_enqueued_again_until_its_retries_run_out(settings: Any, test_redis: Any) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    settings.RECOVERY_JOB_RETRIES = 2
    job = TriageJob.objects.create(kind=TriageJobKind.RECLASSIFY)
    bulk = django_rq.get_queue("bulk")
    for retry in (1, 2):
        TriageJob.objects.filter(pk=job.pk).update(enqueued_at=_long_ago(settings, "RECOVERY_JOB_LOST_AFTER"))
        assert lost_jobs_recover() == [LostJob(model="TriageJob", pk=job.pk, action="retried")]
        job.refresh_from_db()
        assert (job.state, job.retries) == (JobState.QUEUED, retry)
        assert [(j.func_name, tuple(j.args)) for j in bulk.get_jobs()][-1] == ("reclassify", (job.pk,))
    assert lost_jobs_recover() == [], "just enqueued again: not lost"
    TriageJob.objects.filter(pk=job.pk).update(enqueued_at=_long_ago(settings, "RECOVERY_JOB_LOST_AFTER"))
    assert lost_jobs_recover() == [LostJob(model="TriageJob", pk=job.pk, action="retired")]
    job.refresh_from_db()
    assert job.state == JobState.FAILED and "after 2 retries" in job.error
    assert bulk.count == 2


def test_a_running_triage_job_without_a_heartbeat_continues_from_its_checkpoint(settings: Any, test_redis: Any) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    job = TriageJob.objects.create(kind=TriageJobKind.RECLASSIFY, state=JobState.RUNNING, processed=5,
                                   params={"after_id": 42},
                                   heartbeat_at=_long_ago(settings, "RECOVERY_JOB_STALE_AFTER"))  # fmt: skip
    assert lost_jobs_recover() == [LostJob(model="TriageJob", pk=job.pk, action="retried")]
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and job.processed == 5 and job.params == {"after_id": 42}
    run_queued_jobs("bulk")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.deliveries == 1
