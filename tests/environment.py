"""Loaded by pytest before Django (``-p tests.environment`` in pyproject): points the suite at
this checkout's local services (.local/env, written by scripts/services.sh up) and keeps test
data apart from `make run`'s.

- Redis: the tests use database 1, so a `make run` worker on database 0 never takes a test job;
  under pytest-xdist worker gwN uses database 1 + N (tests/namespace.py), so workers never share
  job queues, limiter keys or a flushdb.
- PostgreSQL: pytest-django creates its own test_<name> database (test_<name>_gwN per worker).
- Metrics: each pytest process (and the worker processes its tests start, which inherit the
  variable) writes prometheus-client files to a fresh folder of its own, removed at the end, so
  neither `make run` nor another worker changes the counts a test scrapes.
- HTTPS_ONLY=0: the test servers speak plain HTTP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.namespace import worker, worker_index

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".local" / "env"
REDIS_DATABASES = 16  # redis-server's default `databases`, which scripts/services.sh keeps
TEST_REDIS_DB = str(int(os.environ.get("TEST_REDIS_DB", "1")) + worker_index())
if int(TEST_REDIS_DB) >= REDIS_DATABASES:
    raise SystemExit(
        f"pytest worker {worker()} would use Redis database {TEST_REDIS_DB}, but Redis has {REDIS_DATABASES}: "
        "run fewer xdist workers"
    )
METRICS_DIR = tempfile.mkdtemp(prefix=f"dlq-console-test-metrics-{worker()}-")


def _load_env_file(path: Path) -> None:
    if not path.exists():
        raise SystemExit(f"{path} is missing: start the local services first (make services-up or make test)")
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        os.environ.setdefault(key.strip(), value.strip())


def _with_redis_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


_load_env_file(ENV_FILE)
os.environ["REDIS_URL"] = _with_redis_db(os.environ["REDIS_URL"], TEST_REDIS_DB)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = METRICS_DIR
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 50)
os.environ.setdefault("AUDIT_HMAC_KEY", "test-audit-key-" + "k" * 40)
os.environ["DEBUG"] = "0"
os.environ["HTTPS_ONLY"] = "0"
os.environ["STATIC_MANIFEST"] = "0"
os.environ.setdefault("RECOVERY_JOB_BACKEND", "rq")
# Playwright's sync API runs an event loop in the test thread; Django must still allow ORM calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_configure() -> None:
    """Django is set up by now (pytest-django does it while loading the initial conftests)."""
    from django.conf import settings

    # Django's advice for test suites: a fast password hasher. The default PBKDF2 costs about
    # 0.25 s of CPU per hash, paid for every user the tests create with a password and every
    # sign-in; no test is about the hash itself. Worker processes the tests start keep the
    # default, and only ever see users made here when they sign nobody in.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Iterator[None]:
    """Long tests first, so that under pytest-xdist (which hands tests out in this order) they
    start early and short ones fill the end, instead of a long test starting last and ending
    the run alone. pytest-django then sorts, stably, into its groups (tests on the database,
    then transactional tests, whose flush empties it, then tests without the database); the
    long tests that do not touch the database go to the very front, where they can run at any
    time. No test runs differently, only earlier or later."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    result = yield
    items.sort(key=lambda item: not (item.get_closest_marker("slow") and not _uses_database(item)))
    return result


def _uses_database(item: pytest.Item) -> bool:
    """pytest-django's own test: the django_db marker or one of its database fixtures."""
    fixtures = getattr(item, "fixturenames", ())
    return bool(item.get_closest_marker("django_db")) or any(
        name in fixtures for name in ("db", "transactional_db", "live_server")
    )


def pytest_unconfigure() -> None:
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
