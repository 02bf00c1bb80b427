"""The health page shows, per dependency, whether it answers, how fast, and the error when not;
a dead service turns its own row red and the page still renders."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from recovery.brokers.services import local_brokers_configure
from recovery.health.selectors import health_report
from recovery.health.services import worker_heartbeat_record
from recovery.models import BrokerKind
from recovery.permissions import Role
from tests.factories import BrokerFactory
from tests.helpers import private_redis, wait_until
from tests.recovery.test_job_backends import CELERY_WORKER, VENV_BIN, _process


def _row(html: str, service: str) -> str:
    match = re.search(rf'<tr class="(ok|down)" data-service="{re.escape(service)}".*?</tr>', html, re.S)
    assert match, f"no row for {service}"
    return match.group(0)


def _by_name(checks):
    return {check.name: check for check in checks}


@pytest.mark.django_db
@pytest.mark.timing  # every shared service within the health timeout: measured alone, in the serial phase
def test_every_local_service_answers(settings) -> None:
    local_brokers_configure()
    worker_heartbeat_record(backend=settings.RECOVERY_JOB_BACKEND, worker="test-worker")
    checks = _by_name(health_report())
    for name in [
        "PostgreSQL",
        "Redis",
        "Scheduler and worker heartbeat",
        "local-rabbitmq (RabbitMQ)",
        "local-kafka (Kafka)",
        "local-sqs (Amazon SQS)",
    ]:
        assert checks[name].ok, f"{name}: {checks[name].error}"
        assert checks[name].latency_ms is not None and checks[name].latency_ms >= 0
    assert checks["PostgreSQL"].detail.startswith("PostgreSQL 15")
    assert checks["local-rabbitmq (RabbitMQ)"].detail.startswith("RabbitMQ 3.")


@pytest.mark.django_db
@pytest.mark.fault
def test_killing_redis_turns_its_row_red_and_the_page_still_renders(client_for, settings, tmp_path) -> None:
    client = client_for(Role.VIEWER)
    with private_redis(tmp_path) as (proc, port):
        settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
        before = client.get(reverse("health")).content.decode()
        assert 'data-ok="true"' in _row(before, "Redis")
        proc.kill()
        proc.wait()
        response = client.get(reverse("health"))
    assert response.status_code == 200
    row = _row(response.content.decode(), "Redis")
    assert 'data-ok="false"' in row
    assert "ConnectionError" in row and str(port) in row
    assert 'data-ok="true"' in _row(response.content.decode(), "PostgreSQL")


@pytest.mark.django_db
def test_an_unreachable_broker_shows_the_error(client_for) -> None:
    BrokerFactory(name="gone-rabbit", kind=BrokerKind.RABBITMQ)
    BrokerFactory(name="gone-kafka", kind=BrokerKind.KAFKA)
    BrokerFactory(name="gone-sqs", kind=BrokerKind.SQS, credentials_ref="env:LOCAL_SQS")
    html = client_for(Role.VIEWER).get(reverse("health-rows")).content.decode()
    for name, kind in [("gone-rabbit", "RabbitMQ"), ("gone-kafka", "Kafka"), ("gone-sqs", "Amazon SQS")]:
        row = _row(html, f"{name} ({kind})")
        assert 'data-ok="false"' in row
        assert "127.0.0.1:1" in row


@pytest.mark.django_db
def test_a_disabled_broker_is_not_probed() -> None:
    BrokerFactory(name="off", enabled=False)
    assert not [c for c in health_report() if c.name.startswith("off ")]


@pytest.mark.django_db
def test_a_missing_heartbeat_says_the_scheduler_may_be_down(settings) -> None:
    check = _by_name(health_report())["Scheduler and worker heartbeat"]
    assert not check.ok
    assert "is the scheduler running" in check.error


@pytest.mark.django_db
def test_every_job_queue_is_shown_and_red_without_a_worker(test_redis, settings) -> None:
    checks = _by_name(health_report())
    for queue in settings.RECOVERY_JOB_QUEUES:
        check = checks[f"Queue {queue} ({settings.RECOVERY_JOB_BACKEND})"]
        assert not check.ok
        assert f"no RQ worker is listening on {queue}" in check.error


@pytest.mark.django_db
def test_missing_broker_credentials_are_named_without_a_secret(monkeypatch) -> None:
    monkeypatch.delenv("NOPE_USERNAME", raising=False)
    monkeypatch.delenv("NOPE_PASSWORD", raising=False)
    BrokerFactory(name="no-creds", kind=BrokerKind.RABBITMQ, credentials_ref="env:NOPE")
    check = _by_name(health_report())["no-creds (RabbitMQ)"]
    assert not check.ok
    assert "NOPE_USERNAME" in check.error


@pytest.mark.django_db
def test_sqs_without_credentials_says_so() -> None:
    BrokerFactory(name="anon-sqs", kind=BrokerKind.SQS)
    check = _by_name(health_report())["anon-sqs (Amazon SQS)"]
    assert not check.ok and "credentials" in check.error


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_each_queue_shows_its_own_workers_under_rq_and_celery(settings, test_redis, tmp_path) -> None:
    """A worker that listens on one queue turns that queue's row green and leaves the others red."""
    settings.RECOVERY_JOB_BACKEND = "rq"
    rq_worker = [str(VENV_BIN / "python"), "manage.py", "rqworker", "capture"]
    with _process(rq_worker, "rq", tmp_path / "rq.log"):
        assert wait_until(lambda: _by_name(health_report())["Queue capture (rq)"].ok, timeout=30)
        checks = _by_name(health_report())
    assert "1 worker(s)" in checks["Queue capture (rq)"].detail
    assert (
        not checks["Queue replay (rq)"].ok
        and "no RQ worker is listening on replay" in checks["Queue replay (rq)"].error
    )

    settings.RECOVERY_JOB_BACKEND = "celery"
    celery_worker = [*CELERY_WORKER[:CELERY_WORKER.index("-Q") + 1], "recovery-bulk",
                     *CELERY_WORKER[CELERY_WORKER.index("-Q") + 2:]]  # fmt: skip
    with _process(celery_worker, "celery", tmp_path / "celery.log"):
        assert wait_until(lambda: _by_name(health_report())["Queue bulk (celery)"].ok, timeout=60), (
            tmp_path / "celery.log"
        ).read_text()[-2000:]
        checks = _by_name(health_report())
    assert "1 worker(s)" in checks["Queue bulk (celery)"].detail
    assert not checks["Queue replay (celery)"].ok
    assert "no Celery worker consumes recovery-replay" in checks["Queue replay (celery)"].error
