"""What a drill definition may hold, checked at save time (issue 7, "bad input"): a cron
expression croniter accepts and that fires, a scenario with messages to inject (T + P <= N, no
negative or absurd counts), a replay plan template the replay engine accepts, and a queue pair
that is a drill queue pair unless an admin explicitly chose otherwise, with a reason.

A **drill queue** is a queue or topic whose name starts with ``drill-`` or ``drill.``. The
names a drill gets by default (``drill-<name>-work`` / ``drill-<name>-dlq``) are drill queues;
the runner creates them when missing and records what it created on the drill.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from croniter import CroniterBadDateError, croniter
from django.utils.text import slugify

from recovery.drills.errors import DrillInvalid, NotADrillQueue
from recovery.errors import InvalidInput
from recovery.models import Broker, BrokerKind, Drill
from recovery.permissions import Capability, user_can

DRILL_PREFIXES = ("drill-", "drill.")
MAX_MESSAGES = 1000  # synthetic messages per run: enough to exercise the loop, never a load test
MAX_TIMEOUT = 3600
MIN_REASON = 10
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")

# Every field a drill's form or command may set, with its default (None: required).
DEFAULTS: dict[str, Any] = {
    "name": None, "description": "", "broker": None, "work_queue": "", "dead_letter_queue": "",
    "allow_non_drill_queue": False, "non_drill_queue_reason": "", "message_count": 6, "transient_count": 2,
    "poison_count": 1, "consumer_recovers": True, "schedule": None, "enabled": True, "max_capture_seconds": 60,
    "max_recover_seconds": 120, "timeout_seconds": 300, "rate_per_second": 50, "batch_size": 10, "workers": 1,
    "verifications": [], "stop_conditions": [], "alert_webhook_url": "",
}  # fmt: skip
EDITABLE = tuple(DEFAULTS)
# What the approver approves: everything but the on/off switch of the schedule (pausing a drill
# changes nothing it would do).
HASHED = tuple(name for name in EDITABLE if name != "enabled")

_QUEUE_NAME = {
    BrokerKind.SQS: (re.compile(r"^[A-Za-z0-9_-]{1,80}$"), "1-80 letters, digits, '-' or '_' (standard queues)"),
    BrokerKind.KAFKA: (re.compile(r"^[A-Za-z0-9._-]{1,249}$"), "1-249 letters, digits, '.', '_' or '-'"),
    BrokerKind.RABBITMQ: (re.compile(r"^(?!amq\.)[^\x00-\x1f]{1,200}$"), "1-200 printable characters, not amq.*"),
}


def is_drill_queue(name: str) -> bool:
    """A queue/topic set aside for drills: its name carries the drill prefix."""
    return name.startswith(DRILL_PREFIXES)


def next_run_at(schedule: str, after: datetime) -> datetime:
    """The first time ``schedule`` fires after ``after`` (UTC)."""
    return croniter(schedule, after).get_next(datetime)


def content_hash(values: dict[str, Any] | Drill) -> str:
    """SHA-256 of what an approver approves (invariant 7): any change to these voids approvals."""
    get = values.get if isinstance(values, dict) else lambda name: getattr(values, name)
    data = {name: _hashable(get(name)) for name in HASHED}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _hashable(value: Any) -> Any:
    return value.pk if isinstance(value, Broker) else value


def current_values(drill: Drill) -> dict[str, Any]:
    return {name: getattr(drill, name) for name in EDITABLE}


def clean(data: dict[str, Any]) -> dict[str, Any]:
    """Every field of a drill, checked; raises DrillInvalid naming the first bad field."""
    unknown = set(data) - set(EDITABLE)
    if unknown:
        raise InvalidInput(f"unknown drill fields: {', '.join(sorted(unknown))}")
    values = {name: data.get(name, default) for name, default in DEFAULTS.items()}
    values["name"] = _name(values["name"])
    values["broker"] = _broker(values["broker"])
    values["description"] = str(values["description"] or "").strip()[:5000]
    _queues(values)
    _scenario(values)
    values["schedule"] = clean_schedule(values["schedule"])
    _limits(values)
    _template(values)
    values["alert_webhook_url"] = _webhook(values["alert_webhook_url"])
    for flag in ("allow_non_drill_queue", "consumer_recovers", "enabled"):
        if not isinstance(values[flag], bool):
            raise DrillInvalid(flag, "true or false")
    values["non_drill_queue_reason"] = str(values["non_drill_queue_reason"] or "").strip()
    return values


def clean_schedule(schedule: Any) -> str:
    """A five-field cron expression (or an @hourly-style alias) that fires at least once."""
    text = " ".join(str(schedule or "").split())
    if not text:
        raise DrillInvalid("schedule", "a cron expression is required, e.g. */30 * * * * (every 30 minutes, UTC)")
    if not (text in CRON_ALIASES or len(text.split(" ")) == 5) or not croniter.is_valid(text):
        raise DrillInvalid(
            "schedule", f"{text[:100]!r} is not a valid cron expression (five fields: minute hour day month weekday)"
        )
    try:
        next_run_at(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CroniterBadDateError:
        raise DrillInvalid("schedule", f"{text!r} never fires") from None
    return text


def check_queue_choice(values: dict[str, Any], actor: Any) -> None:
    """Queues without the drill prefix only by an admin's explicit choice, with a reason."""
    outside = [name for name in (values["work_queue"], values["dead_letter_queue"]) if not is_drill_queue(name)]
    if not outside:
        values["allow_non_drill_queue"], values["non_drill_queue_reason"] = False, ""
        return
    listed = ", ".join(repr(name) for name in outside)
    if not values["allow_non_drill_queue"]:
        raise NotADrillQueue(
            "work_queue" if values["work_queue"] in outside else "dead_letter_queue",
            f"{listed} {'is not a drill queue' if len(outside) == 1 else 'are not drill queues'} (names start with "
            f"{' or '.join(DRILL_PREFIXES)}); only an admin may point a drill at another queue, by choosing it "
            "explicitly with a reason",
        )
    if not isinstance(actor, str) and not user_can(actor, Capability.MANAGE):
        raise NotADrillQueue("allow_non_drill_queue", f"only an admin may point a drill at {listed}")
    if len(values["non_drill_queue_reason"]) < MIN_REASON:
        raise NotADrillQueue(
            "non_drill_queue_reason", f"say why the drill may use {listed} (at least {MIN_REASON} characters)"
        )


def _name(value: Any) -> str:
    name = str(value or "").strip()
    if not name or slugify(name) != name or len(name) > 50:
        raise DrillInvalid("name", "a short slug (letters, digits, '-' or '_'; at most 50 characters)")
    return name


def _broker(value: Any) -> Broker:
    broker = value if isinstance(value, Broker) else Broker.objects.filter(pk=value).first() if value else None
    if broker is None:
        raise DrillInvalid("broker", "choose the broker the drill runs on")
    return broker


def _queues(values: dict[str, Any]) -> None:
    name, kind = values["name"], values["broker"].kind
    values["work_queue"] = str(values["work_queue"] or "").strip() or f"drill-{name}-work"
    values["dead_letter_queue"] = str(values["dead_letter_queue"] or "").strip() or f"drill-{name}-dlq"
    pattern, rule = _QUEUE_NAME[kind]
    for field in ("work_queue", "dead_letter_queue"):
        if not pattern.match(values[field]):
            raise DrillInvalid(field, f"{values[field][:80]!r} is not a valid {kind} name ({rule})")
    if values["work_queue"] == values["dead_letter_queue"]:
        raise DrillInvalid("dead_letter_queue", "the dead-letter queue must differ from the work queue")


def _count(values: dict[str, Any], field: str, low: int, high: int) -> int:
    value = values[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise DrillInvalid(field, "a whole number")
    if not low <= value <= high:
        raise DrillInvalid(field, f"between {low:,} and {high:,} (got {value:,})")
    return value


def _scenario(values: dict[str, Any]) -> None:
    if values["message_count"] == 0:
        raise DrillInvalid("message_count", "a drill needs at least one message to inject (got 0)")
    total = _count(values, "message_count", 1, MAX_MESSAGES)
    transient = _count(values, "transient_count", 0, MAX_MESSAGES)
    poison = _count(values, "poison_count", 0, MAX_MESSAGES)
    if transient < 1:
        raise DrillInvalid("transient_count", "at least 1: a drill with nothing to replay exercises no recovery")
    if transient + poison > total:
        raise DrillInvalid(
            "transient_count", f"transient ({transient}) + poison ({poison}) exceed the {total} messages injected"
        )


def _limits(values: dict[str, Any]) -> None:
    timeout = _count(values, "timeout_seconds", 30, MAX_TIMEOUT)
    _count(values, "max_capture_seconds", 1, MAX_TIMEOUT)
    recover = _count(values, "max_recover_seconds", 1, MAX_TIMEOUT)
    if recover > timeout:
        raise DrillInvalid("max_recover_seconds", f"{recover} s can never be met: a run times out after {timeout} s")


def _template(values: dict[str, Any]) -> None:
    """The replay plan template, checked by the replay's own rules against the drill's broker."""
    from recovery.replay.checks import validate_config
    from recovery.replay.limits import validate_rate_plan

    plan = {
        "rate_per_second": values["rate_per_second"], "batch_size": values["batch_size"], "workers": values["workers"],
        "canary_count": 0, "canary_window_seconds": 0, "ramp_interval_seconds": 0, "ramp_steps": [],
        "required_approvals": 1, "target_broker": values["broker"], "target_address": values["work_queue"],
    }  # fmt: skip
    try:
        validate_rate_plan(plan)
        for kind in ("verifications", "stop_conditions"):
            values[kind] = validate_config(kind, values[kind])
    except InvalidInput as exc:
        raise DrillInvalid("template", str(exc)) from None


def _webhook(value: Any) -> str:
    url = str(value or "").strip()
    if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc or len(url) > 500):
        raise DrillInvalid("alert_webhook_url", "an http(s) URL of at most 500 characters")
    return url
