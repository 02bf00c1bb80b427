"""Loaded by pytest before Django (``-p tests.environment`` in pyproject): points the suite at
this checkout's local services (.local/env, written by scripts/services.sh up) and keeps test
data apart from `make run`'s.

- Redis: the tests use database 1, so a `make run` worker on database 0 never takes a test job.
- PostgreSQL: pytest-django creates its own test_<name> database.
- HTTPS_ONLY=0: the test servers speak plain HTTP.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = ROOT / ".local" / "env"
TEST_REDIS_DB = os.environ.get("TEST_REDIS_DB", "1")


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
os.environ.setdefault("SECRET_KEY", "test-secret-key-" + "x" * 50)
os.environ.setdefault("AUDIT_HMAC_KEY", "test-audit-key-" + "k" * 40)
os.environ["DEBUG"] = "0"
os.environ["HTTPS_ONLY"] = "0"
os.environ["STATIC_MANIFEST"] = "0"
os.environ.setdefault("RECOVERY_JOB_BACKEND", "rq")
# Playwright's sync API runs an event loop in the test thread; Django must still allow ORM calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
