"""The one settings module. Every value comes from the environment (see console/env.py and
docs/configuration.md); bad values stop the process at start-up with the variable's name.

Production defaults are strict (HTTPS only, secure cookies, HSTS); DEBUG=1 relaxes them for
local development. `manage.py check --deploy` reports no issue with production values.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from console.env import envbool, envchoice, envint, envlist, envsecret, envstr

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = envbool("DEBUG", False)

SECRET_KEY = envsecret("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG is off")
    SECRET_KEY = "insecure-local-development-key-only-used-with-DEBUG"  # noqa: S105

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["localhost", "127.0.0.1"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "django_htmx",
    "django_rq",
    "console",
    "recovery",
    "recovery.observability",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "console.middleware.RequestContextMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Every view requires login unless it is marked @login_not_required (only the login page).
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "console.urls"
WSGI_APPLICATION = "console.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dlq_console"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", 60, minimum=0),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL (postgres://...)")
# The database pytest-django creates for a test run (several runs side by side need distinct names).
DATABASES["default"]["TEST"] = {"NAME": envstr("TEST_DATABASE_NAME", f"test_{DATABASES['default']['NAME']}")}
DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = envint("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(envstr("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
# Deployments run collectstatic (the Dockerfile does) and serve hashed, compressed files; tests and
# `make run` serve them straight from the source folders (STATIC_MANIFEST=0).
STATIC_MANIFEST = envbool("STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST

# --- HTTPS and cookies: strict unless DEBUG or HTTPS_ONLY=0 (plain-HTTP test servers).
HTTPS_ONLY = envbool("HTTPS_ONLY", not DEBUG)
SECURE_SSL_REDIRECT = HTTPS_ONLY
SESSION_COOKIE_SECURE = HTTPS_ONLY
CSRF_COOKIE_SECURE = HTTPS_ONLY
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31_536_000 if HTTPS_ONLY else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS_ONLY)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", HTTPS_ONLY)
if envbool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 8 * 3600, minimum=300)
X_FRAME_OPTIONS = "DENY"

TRUST_X_FORWARDED_FOR = envbool("TRUST_X_FORWARDED_FOR", False)

# --- Audit trail: checkpoints are HMAC-SHA-256 signed with a key that never enters the database.
_audit_key = envsecret("AUDIT_HMAC_KEY")
if not _audit_key:
    if not DEBUG:
        raise ImproperlyConfigured("AUDIT_HMAC_KEY (or AUDIT_HMAC_KEY_FILE) is required when DEBUG is off")
    _audit_key = "insecure-local-development-audit-key"
if len(_audit_key) < 32:
    raise ImproperlyConfigured("AUDIT_HMAC_KEY must be at least 32 characters")
AUDIT_HMAC_KEY = _audit_key.encode()
# A signed checkpoint is recorded when the chain moved and this many seconds have passed.
AUDIT_CHECKPOINT_INTERVAL = envint("AUDIT_CHECKPOINT_INTERVAL", 300, minimum=10)

# --- Capture (see docs/capture.md)
RECOVERY_CAPTURE_MAX_BODY = envint("RECOVERY_CAPTURE_MAX_BODY", 16 * 1024 * 1024, minimum=1024)
RECOVERY_CAPTURE_MAX_PER_PASS = envint("RECOVERY_CAPTURE_MAX_PER_PASS", 100_000, minimum=1)
RECOVERY_CAPTURE_WAIT_SECONDS = envint("RECOVERY_CAPTURE_WAIT_SECONDS", 1, minimum=0, maximum=20)
RECOVERY_CAPTURE_RETRY_ATTEMPTS = envint("RECOVERY_CAPTURE_RETRY_ATTEMPTS", 3, minimum=1, maximum=20)
RECOVERY_CAPTURE_RETRY_BASE_MS = envint("RECOVERY_CAPTURE_RETRY_BASE_MS", 2000, minimum=1)
RECOVERY_CAPTURE_MAX_BACKOFF = envint("RECOVERY_CAPTURE_MAX_BACKOFF", 3600, minimum=10)
# Oversize bodies are parked in S3-compatible object storage (recovery/capture/parking.py). No
# bucket: an oversize message stays on its broker and its capture pass fails, saying so.
RECOVERY_PARKING_S3_BUCKET = envstr("RECOVERY_PARKING_S3_BUCKET", "")
RECOVERY_PARKING_S3_PREFIX = envstr("RECOVERY_PARKING_S3_PREFIX", "dead-letters/")
RECOVERY_PARKING_S3_ENDPOINT_URL = envstr("RECOVERY_PARKING_S3_ENDPOINT_URL", "")  # '' = AWS
RECOVERY_PARKING_S3_REGION = envstr("RECOVERY_PARKING_S3_REGION", "us-east-1")
# '' = boto3's own credential chain (instance role, AWS_* variables); never stored in the database
RECOVERY_PARKING_S3_ACCESS_KEY_ID = envsecret("RECOVERY_PARKING_S3_ACCESS_KEY_ID", "")
RECOVERY_PARKING_S3_SECRET_ACCESS_KEY = envsecret("RECOVERY_PARKING_S3_SECRET_ACCESS_KEY", "")
RECOVERY_PARKING_TIMEOUT = envint("RECOVERY_PARKING_TIMEOUT", 30, minimum=1, maximum=600)
RECOVERY_APPROVAL_TTL = envint("RECOVERY_APPROVAL_TTL", 24 * 3600, minimum=60)  # seconds an approval stays valid
RECOVERY_REPLAY_LEASE_SECONDS = envint("RECOVERY_REPLAY_LEASE_SECONDS", 30, minimum=2, maximum=3600)

# --- Redis and background jobs
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
RECOVERY_JOB_BACKEND = envchoice("RECOVERY_JOB_BACKEND", ("rq", "celery"), "rq")
# One queue per kind of work (recovery.jobs.registry.JobQueue), each served by its own workers.
RECOVERY_JOB_QUEUES = ("replay", "capture", "periodic", "bulk")
# recovery.jobs.queue.enqueue already waits for the commit, for both backends. Jobs travel by
# registered name with JSON arguments; the worker and job classes refuse anything else.
# The job watchdog (recovery/jobs/watchdog.py): a running job without a heartbeat for STALE_AFTER
# seconds, or a queued one not started LOST_AFTER seconds after it was enqueued, is lost; rows that
# can continue are enqueued again up to RETRIES times, the rest are retired (marked failed).
RECOVERY_JOB_STALE_AFTER = envint("RECOVERY_JOB_STALE_AFTER", 120, minimum=10)
RECOVERY_JOB_LOST_AFTER = envint("RECOVERY_JOB_LOST_AFTER", 300, minimum=10)
RECOVERY_JOB_RETRIES = envint("RECOVERY_JOB_RETRIES", 3, minimum=0, maximum=100)
RQ = {
    "COMMIT_MODE": "auto",
    "WORKER_CLASS": "recovery.jobs.rq_worker.RegisteredJobWorker",
    "JOB_CLASS": "recovery.jobs.rq_worker.RegisteredJob",
}
RQ_QUEUES = {
    name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": 3600, "SERIALIZER": "rq.serializers.JSONSerializer"}
    for name in RECOVERY_JOB_QUEUES
}
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = "recovery-periodic"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery workers log through LOGGING below, like every other process.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# How often the scheduler ticks, and so how often workers report a heartbeat (seconds).
RECOVERY_SCHEDULER_INTERVAL = envint("RECOVERY_SCHEDULER_INTERVAL", 15, minimum=1, maximum=3600)
# Timeout for each health probe (database, Redis, each broker), in seconds.
RECOVERY_HEALTH_TIMEOUT = envint("RECOVERY_HEALTH_TIMEOUT", 3, minimum=1, maximum=30)
# Where a failing drill run is POSTed when the drill names no webhook of its own (empty: nowhere).
RECOVERY_DRILL_ALERT_WEBHOOK = envstr("RECOVERY_DRILL_ALERT_WEBHOOK", "")

# --- Observability (docs/operations.md). Tracing is configured by the standard OTEL_* variables
# (recovery/observability/tracing.py) and is off unless they ask for it.
# /metrics answers a scraper sending "Authorization: Bearer <token>", or a logged-in admin.
RECOVERY_METRICS_TOKEN = envsecret("RECOVERY_METRICS_TOKEN") or ""
if RECOVERY_METRICS_TOKEN and len(RECOVERY_METRICS_TOKEN) < 24:
    raise ImproperlyConfigured("RECOVERY_METRICS_TOKEN must be at least 24 characters")
# How often DLQs without a scheduled capture have their broker-side depth read (seconds).
RECOVERY_METRICS_DEPTH_INTERVAL = envint("RECOVERY_METRICS_DEPTH_INTERVAL", 60, minimum=5, maximum=3600)
# Every process of this installation on this host writes its metrics here and /metrics adds them
# up (prometheus-client multiprocess mode). Share it between the web and worker containers.
PROMETHEUS_MULTIPROC_DIR = envstr(
    "PROMETHEUS_MULTIPROC_DIR",
    str(Path(tempfile.gettempdir()) / f"dlq-console-metrics-{hashlib.sha256(str(BASE_DIR).encode()).hexdigest()[:10]}"),
)
try:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r}: {exc.strerror}") from None
# prometheus-client reads the variable, not this setting.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR

# --- Logging: one configuration for web and workers: JSON lines (recovery/observability/logging.py)
# with request id, user, job, run id and trace id; LOG_FORMAT=plain for a terminal.
LOG_LEVEL = envchoice("LOG_LEVEL", ("debug", "info", "warning", "error"), "info").upper()
LOG_FORMAT = envchoice("LOG_FORMAT", ("json", "plain"), "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "recovery.observability.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pika": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
    },
}
