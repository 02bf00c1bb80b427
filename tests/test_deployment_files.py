"""Dockerfile and docker-compose.yml cannot be built or run here (no Docker engine): these tests
check what can be checked. The compose file is wired through variables settings actually read,
runs the same worker and scheduler commands as `make run`, and the image's build and start steps
(collectstatic, gunicorn with hashed static files) work when run directly."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from recovery.jobs.registry import JobQueue, job_names, registered
from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
APP_SERVICES = ["web", *(f"worker-{queue}" for queue in settings.RECOVERY_JOB_QUEUES), "scheduler"]
SOURCE = "\n".join(p.read_text() for p in [*ROOT.glob("console/**/*.py"), *ROOT.glob("recovery/**/*.py")])


def test_compose_has_every_service() -> None:
    assert set(COMPOSE["services"]) == {
        *APP_SERVICES,
        "postgres",
        "redis",
        "rabbitmq",
        "kafka",
        "sqs",
    }


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_only_set_variables_the_code_reads(service: str) -> None:
    env = COMPOSE["services"][service]["environment"]
    for required in ["DATABASE_URL", "REDIS_URL", "SECRET_KEY", "AUDIT_HMAC_KEY", "ALLOWED_HOSTS"]:
        assert required in env
    # Credentials are read through references: "env:LOCAL_SQS" reads LOCAL_SQS_ACCESS_KEY_ID etc.
    prefixes = set(re.findall(r'"env:([A-Z_][A-Z0-9_]*)"', SOURCE))
    unknown = [
        name
        for name in env
        if f'"{name}' not in SOURCE and not any(name.startswith(f"{prefix}_") for prefix in prefixes)
    ]
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"


def test_every_job_queue_has_a_worker_in_compose_and_in_make_run() -> None:
    run_script = (ROOT / "scripts" / "run.sh").read_text()
    for queue in settings.RECOVERY_JOB_QUEUES:
        assert COMPOSE["services"][f"worker-{queue}"]["command"][1:] == ["manage.py", "rqworker", queue]
        assert f"manage.py rqworker {queue}" in run_script
        assert f"recovery-{queue}" in run_script or "recovery-$queue" in run_script, f"no Celery worker for {queue}"
    assert COMPOSE["services"]["scheduler"]["command"][1:] == ["manage.py", "scheduler"]
    assert "manage.py scheduler" in run_script


def test_the_queues_in_settings_are_the_registry_queues_and_every_job_has_one() -> None:
    assert tuple(settings.RECOVERY_JOB_QUEUES) == tuple(JobQueue.values)
    assert {registered(name).queue for name in job_names()} <= set(JobQueue)


def test_dockerfile_is_multi_stage_non_root_with_gunicorn() -> None:
    assert len(re.findall(r"^FROM ", DOCKERFILE, re.M)) >= 2
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in {"root", "0"}
    assert "collectstatic --noinput" in DOCKERFILE and "gunicorn console.wsgi" in DOCKERFILE.replace('", "', " ")
    for copied in re.findall(r"^COPY (?!--from)(\S+) ", DOCKERFILE, re.M):
        assert (ROOT / copied).exists(), f"Dockerfile copies {copied}, which does not exist"


@pytest.mark.slow
def test_collectstatic_then_gunicorn_serves_the_login_page_and_hashed_static(tmp_path: Path) -> None:
    """The image's build step and start command, run directly with production settings."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "SECRET_KEY": secrets.token_urlsafe(50),
        "AUDIT_HMAC_KEY": secrets.token_urlsafe(40),
        "STATIC_ROOT": str(tmp_path / "static"),
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": os.environ["REDIS_URL"],
        "ALLOWED_HOSTS": "127.0.0.1",
        "HTTPS_ONLY": "0",
    }
    collect = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collect.returncode == 0, collect.stderr
    assert (tmp_path / "static" / "staticfiles.json").exists()
    port = free_port()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen(
        [str(gunicorn), "console.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: _get(f"http://127.0.0.1:{port}/login/") is not None, timeout=30)
        page = _get(f"http://127.0.0.1:{port}/login/")
        css = re.search(r'href="(/static/console/app\.[0-9a-f]{12}\.css)"', page)
        assert css, "the page must link the hashed stylesheet"
        assert "--ok" in _get(f"http://127.0.0.1:{port}{css.group(1)}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback test server
            return response.read().decode()
    except OSError:
        return None
