"""Settings come from the environment, fail fast on bad values, and pass `check --deploy` with
production values."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from console.env import envbool, envchoice, envint, envlist, envsecret

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a clean environment holding only PATH and ``env``."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "AUDIT_HMAC_KEY": secrets.token_urlsafe(40),
    "ALLOWED_HOSTS": "dlq.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://dlq.example.com",
    "DATABASE_URL": "postgres://dlq@db.example.com:5432/dlq",
    "REDIS_URL": "redis://redis.example.com:6379/0",
}


def test_check_deploy_reports_no_issue_with_production_values() -> None:
    result = _manage("check", "--deploy", "--fail-level", "DEBUG", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)" in result.stdout


def test_check_deploy_flags_debug_in_production() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION, DEBUG="1")
    assert result.returncode != 0
    assert "security.W018" in result.stderr


def test_a_secret_key_is_required_outside_debug() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = _manage("check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) is required" in result.stderr


def test_an_audit_key_is_required_outside_debug() -> None:
    env = {k: v for k, v in PRODUCTION.items() if k != "AUDIT_HMAC_KEY"}
    result = _manage("check", **env)
    assert result.returncode != 0
    assert "AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE) is required" in result.stderr


def test_the_secret_key_can_come_from_a_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text(secrets.token_urlsafe(50) + "\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = _manage("check", "--deploy", "--fail-level", "DEBUG", **env, SECRET_KEY_FILE=str(key_file))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("RECOVERY_JOB_BACKEND", "kafka", "RECOVERY_JOB_BACKEND='kafka' must be one of rq, celery"),
        ("RECOVERY_SCHEDULER_INTERVAL", "soon", "RECOVERY_SCHEDULER_INTERVAL='soon' is not an integer"),
        ("SECURE_HSTS_SECONDS", "-1", "SECURE_HSTS_SECONDS=-1 is below the minimum 0"),
        ("DATABASE_URL", "sqlite:///x.db", "DATABASE_URL must point at PostgreSQL"),
        ("AUDIT_HMAC_KEY", "short", "AUDIT_HMAC_KEY must be at least 32 characters"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name: str, value: str, message: str) -> None:
    result = _manage("check", **{**PRODUCTION, name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_typed_helpers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("A_BOOL", "Yes")
    monkeypatch.setenv("A_INT", "42")
    monkeypatch.setenv("A_LIST", "a, b,,c")
    monkeypatch.setenv("A_CHOICE", "Celery")
    assert envbool("A_BOOL", False) is True
    assert envbool("UNSET_BOOL", True) is True
    assert envint("A_INT", 1, minimum=1, maximum=100) == 42
    assert envlist("A_LIST") == ["a", "b", "c"]
    assert envchoice("A_CHOICE", ("rq", "celery"), "rq") == "celery"
    with pytest.raises(ImproperlyConfigured, match="A_INT=42 is above the maximum 10"):
        envint("A_INT", 1, maximum=10)
    monkeypatch.setenv("A_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="A_SECRET_FILE=.* cannot be read"):
        envsecret("A_SECRET")
