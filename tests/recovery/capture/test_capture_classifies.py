"""Letters are classified at capture: a pass asks for a classification job (throttled to one a
second per DLQ while it runs, and once at its end) and the worker that runs it classifies every
new letter, including the x-replay-id of a replayed message that came back."""

from __future__ import annotations

import django_rq
import pytest

from recovery.capture.services import capture_pass_request, capture_pass_run
from recovery.models import CaptureTrigger, DeadLetter, FingerprintGroup
from tests.helpers import run_queued_jobs

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_capture_pass_gets_its_letters_classified(rabbit, settings, test_redis) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    dlq = rabbit.make_dlq()
    headers = {"x-exception-class": "java.net.SocketTimeoutException", "x-replay-id": "r" + "a" * 32}
    rabbit.fill(dlq, [(f'{{"n": {i}}}'.encode(), headers) for i in range(7)])
    capture_pass_run(pass_id=capture_pass_request(actor="cli:test", dlq=dlq, trigger=CaptureTrigger.CLI).pk)
    assert DeadLetter.objects.filter(dlq=dlq, classified_by="").count() == 7, "capture itself stays lean"
    queued = [job.func_name for job in django_rq.get_queue("capture").jobs]
    assert "classify_dlq" in queued
    run_queued_jobs("capture")
    letters = DeadLetter.objects.filter(dlq=dlq)
    assert not letters.filter(classified_by="").exists()
    assert set(letters.values_list("replay_id", flat=True)) == {"r" + "a" * 32}
    assert FingerprintGroup.objects.get(fingerprint=letters.first().fingerprint).letter_count == 7
