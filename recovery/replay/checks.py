"""The registry behind a plan's preconditions, stop conditions and verification steps (issue 6,
parts 3, 6 and 7), and the probes they share (targets, depths, HTTP).

A plan stores each kind as a JSON list of objects: ``{"check": name, ...params}`` for
preconditions, ``{"condition": name, ...}`` for stop conditions, ``{"step": name, ...}`` for
verification steps. Each name maps to a function registered with ``@register``, together with
the parameters it takes, so that a plan is validated when it is saved (``validate_config``) and
a typo is refused there rather than discovered when a run should stop.

Evaluation never raises: a check that errors is a failed result whose reason is the error
(``run_checks``). Inside a transaction each check runs in a savepoint, so a failing query does
not poison the caller's transaction.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db import connection, models, transaction

from recovery.brokers.base import DlqAddress
from recovery.brokers.registry import broker_session
from recovery.errors import InvalidInput, RecoveryError
from recovery.models import Broker, BrokerKind, PlanItem, PlanItemState, ReplayPlan


class CheckKind(models.TextChoices):
    """The three lists of a plan; the values are the plan's field names."""

    PRECONDITIONS = "preconditions", "precondition"
    STOP_CONDITIONS = "stop_conditions", "stop condition"
    VERIFICATIONS = "verifications", "verification step"


NAME_KEY = {CheckKind.PRECONDITIONS: "check", CheckKind.STOP_CONDITIONS: "condition", CheckKind.VERIFICATIONS: "step"}
_MODULES = {
    CheckKind.PRECONDITIONS: "recovery.replay.preconditions",
    CheckKind.STOP_CONDITIONS: "recovery.replay.stop_conditions",
    CheckKind.VERIFICATIONS: "recovery.replay.verification",
}
MAX_ENTRIES = 20
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CheckResult:
    """One evaluation. ``ok`` False means: a precondition fails, a stop condition tripped, a
    verification step failed. ``pending`` (verification only): the step's window is not over
    and nothing has failed yet; ``ok`` stays False until it passes. ``details`` is the evidence
    (JSON-safe), including the ``params`` the check ran with."""

    name: str
    ok: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    pending: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "pending": self.pending,
            "reason": self.reason,
            "details": self.details,
        }


def passed(reason: str, **details: Any) -> CheckResult:
    return CheckResult("", True, reason, details)


def failed(reason: str, **details: Any) -> CheckResult:
    return CheckResult("", False, reason, details)


def waiting(reason: str, **details: Any) -> CheckResult:
    return CheckResult("", False, reason, details, pending=True)


# -- parameters --------------------------------------------------------------------------------

_REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter: ``parse`` returns the clean value or raises ValueError saying what it
    should be."""

    name: str
    parse: Callable[[Any], Any]
    default: Any = _REQUIRED


def integer(low: int, high: int = 10**9) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"a whole number from {low:,} to {high:,} (got {value!r})")
        return value

    return parse


def number(above: float, at_most: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not above < value <= at_most:
            raise ValueError(f"a number above {above:g} and at most {at_most:g} (got {value!r})")
        return value

    return parse


def http_url(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 2000 or any(c.isspace() for c in value):
        raise ValueError(f"an http:// or https:// URL (got {value!r})")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"an http:// or https:// URL (got {value!r})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"an http:// or https:// URL with a host (got {value!r})")
    return value


def clock_time(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f'a time of day as "HH:MM", 00:00 to 23:59 (got {value!r})')
    return value


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = dict(
    zip(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), WEEKDAYS, strict=True)
) | {day: day for day in WEEKDAYS}


def weekdays(value: Any) -> list[str]:
    """Days as given ("mon" or "Monday"), returned short, in week order, once each."""
    if not isinstance(value, list) or not value or not all(isinstance(d, str) for d in value):
        raise ValueError(f"a non-empty list of days from {', '.join(WEEKDAYS)} (got {value!r})")
    days = {_DAY_NAMES.get(d.strip().lower()) for d in value}
    if None in days:
        raise ValueError(f"days from {', '.join(WEEKDAYS)} (got {value!r})")
    return [d for d in WEEKDAYS if d in days]


def timezone_name(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f'an IANA time zone such as "Europe/Berlin" (got {value!r})')
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'an IANA time zone such as "Europe/Berlin" (got {value!r})') from None
    return value


def text(max_length: int) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > max_length:
            raise ValueError(f"a non-empty text of at most {max_length} characters (got {value!r})")
        return value.strip()

    return parse


def choice(*values: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in values:
            raise ValueError(f"one of {', '.join(values)} (got {value!r})")
        return value

    return parse


HTTP_STATUS = integer(100, 599)
TIMEOUT_S = number(0, 30)
STOP_ACTION = Param("action", choice("pause", "abort"), "pause")


# -- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    kind: str
    name: str
    func: Callable[..., CheckResult]
    params: tuple[Param, ...]
    stages: frozenset[str] | None = None  # preconditions: the stages it is evaluated at (None: all)
    validate: Callable[[dict[str, Any]], None] | None = None  # a rule across parameters

    def clean(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The parameters with defaults filled in; ValueError says what is wrong."""
        known = [p.name for p in self.params]
        unknown = sorted(set(raw) - set(known))
        if unknown:
            takes = ", ".join(known) or "no parameters"
            raise ValueError(f"unknown parameter {', '.join(unknown)} (it takes {takes})")
        clean: dict[str, Any] = {}
        for param in self.params:
            if param.name not in raw:
                if param.default is _REQUIRED:
                    raise ValueError(f"{param.name} is missing")
                clean[param.name] = param.default
                continue
            try:
                clean[param.name] = param.parse(raw[param.name])
            except ValueError as exc:
                raise ValueError(f"{param.name}: {exc}") from None
        if self.validate:
            self.validate(clean)
        return clean


_REGISTRY: dict[str, dict[str, Check]] = {kind: {} for kind in CheckKind.values}


def register(
    kind: str,
    name: str,
    *,
    params: Iterable[Param] = (),
    stages: Iterable[str] | None = None,
    validate: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., CheckResult]], Callable[..., CheckResult]]:
    """Register ``func`` as check ``name`` of ``kind``. Stop conditions take ``action``
    (pause, the default, or abort) on top of their own parameters."""
    all_params = (*params, STOP_ACTION) if kind == CheckKind.STOP_CONDITIONS else tuple(params)

    def decorate(func: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        frozen = frozenset(stages) if stages is not None else None
        _REGISTRY[kind][name] = Check(kind, name, func, all_params, frozen, validate)
        return func

    return decorate


def registered(kind: str) -> dict[str, Check]:
    """The checks of ``kind`` by name (importing the module that registers them)."""
    importlib.import_module(_MODULES[CheckKind(kind)])
    return _REGISTRY[kind]


def registered_names(kind: str) -> list[str]:
    return sorted(registered(kind))


def parse_entry(kind: str, entry: Any, position: int = 1) -> tuple[Check, dict[str, Any]]:
    """The check an entry names and its clean parameters; InvalidInput says what is wrong and
    where (``position`` counts from 1)."""
    checks, key = registered(kind), NAME_KEY[CheckKind(kind)]
    where = f"{CheckKind(kind).label} {position}"
    if not isinstance(entry, dict):
        raise InvalidInput(f'{where}: an object such as {{"{key}": "<name>", ...}} (got {entry!r:.80})')
    name = entry.get(key)
    check = checks.get(name) if isinstance(name, str) else None
    if check is None:
        what = f"unknown {key} {name!r:.80}" if key in entry else f'no "{key}" naming it'
        raise InvalidInput(f"{where}: {what}; known: {', '.join(sorted(checks))}")
    try:
        params = check.clean({k: v for k, v in entry.items() if k != key})
    except ValueError as exc:
        raise InvalidInput(f"{where} ({name}): {exc}") from None
    return check, params


def validate_config(kind: str, entries: Any) -> list[dict[str, Any]]:
    """Validate a plan's list of ``kind`` when the plan is saved. Returns the entries with
    defaults filled in; raises InvalidInput naming the first bad entry and what is wrong."""
    label = CheckKind(kind).label
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidInput(f"{label}s: a list of objects (got {type(entries).__name__})")
    if len(entries) > MAX_ENTRIES:
        raise InvalidInput(f"{label}s: at most {MAX_ENTRIES} (got {len(entries)})")
    cleaned = []
    for position, entry in enumerate(entries, 1):
        check, params = parse_entry(kind, entry, position)
        cleaned.append({NAME_KEY[CheckKind(kind)]: check.name, **params})
    return cleaned


def run_checks(kind: str, entries: Any, *args: Any, stage: str | None = None) -> list[CheckResult]:
    """Evaluate each entry as ``func(*args, params)``; never raises. An invalid entry or a
    check that raises gives a failed result saying so. ``stage`` skips preconditions that do
    not apply at that stage."""
    key = NAME_KEY[CheckKind(kind)]
    results = []
    for position, entry in enumerate(entries if isinstance(entries, list) else [entries], 1):
        name = str(entry.get(key, "?")) if isinstance(entry, dict) else "?"
        try:
            check, params = parse_entry(kind, entry, position)
        except InvalidInput as exc:
            results.append(CheckResult(name, False, f"invalid configuration: {exc}", {"params": _jsonable(entry)}))
            continue
        if stage is not None and check.stages is not None and stage not in check.stages:
            continue
        result = _call(check, params, args)
        results.append(replace(result, name=check.name, details={**result.details, "params": params}))
    return results


def _call(check: Check, params: dict[str, Any], args: tuple[Any, ...]) -> CheckResult:
    try:
        if connection.in_atomic_block:  # a savepoint: a failed query must not poison the caller
            with transaction.atomic():
                return check.func(*args, params)
        return check.func(*args, params)
    except Exception as exc:  # noqa: BLE001 - any error is this check's failure, never its caller's
        return failed(f"could not evaluate: {describe_error(exc)}", error=type(exc).__name__)


def describe_error(exc: BaseException) -> str:
    message = str(exc) if isinstance(exc, RecoveryError) else f"{type(exc).__name__}: {exc}"
    return (message.strip().splitlines() or [""])[0][:500]  # a database error's SQL excerpt is noise


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)[:500]
    return value


# -- targets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanTarget:
    """A distinct target of a plan's included items, as frozen on them (recovery.replay.targets:
    ``{"broker": id, "name": queue URL / exchange / topic, "routing_key", "vhost"}``)."""

    broker: Broker
    name: str
    routing_key: str
    vhost: str
    raw: dict[str, Any]

    @property
    def key(self) -> tuple[Any, ...]:
        return target_key(self.raw)

    def describe(self) -> str:
        if self.broker.kind == BrokerKind.RABBITMQ:
            where = f"exchange {self.name} → {self.routing_key}" if self.name else f"queue {self.routing_key}"
        else:
            where = self.name
        return f"{self.broker.name}: {where}"


def target_key(raw: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two targets the same: broker + queue URL / topic / exchange; for RabbitMQ's
    default exchange the routing key is the queue, so it counts too."""
    name = raw.get("name", raw.get("address", ""))
    return (raw.get("broker"), raw.get("vhost", ""), name, "" if name else raw.get("routing_key", ""))


def plan_targets(plan: ReplayPlan) -> list[PlanTarget]:
    """The distinct targets of the plan's included items; before the plan is frozen, its
    override target if it has one."""
    raws = list(
        PlanItem.objects.filter(plan=plan, state=PlanItemState.INCLUDED).values_list("target", flat=True).distinct()
    )
    if not raws and plan.target_broker_id:
        raws = [{"broker": plan.target_broker_id, "name": plan.target_address, "routing_key": plan.target_routing_key}]
    brokers = Broker.objects.in_bulk({raw.get("broker") for raw in raws if raw})
    targets = []
    for raw in sorted((r for r in raws if r), key=lambda r: json.dumps(r, sort_keys=True)):
        broker = brokers.get(raw.get("broker"))
        if broker is None:
            raise InvalidInput(f"a plan item names broker {raw.get('broker')!r}, which does not exist")
        name = raw.get("name", raw.get("address", ""))
        targets.append(PlanTarget(broker, name, raw.get("routing_key", ""), raw.get("vhost", ""), raw))
    return targets


def by_broker(targets: Iterable[PlanTarget]) -> dict[Broker, list[PlanTarget]]:
    grouped: dict[Broker, list[PlanTarget]] = {}
    for target in targets:
        grouped.setdefault(target.broker, []).append(target)
    return grouped


def depth_address(target: PlanTarget, *, group: str = "", queue: str = "") -> DlqAddress:
    """Where the depth of a target is read: the SQS queue; the RabbitMQ queue (the routing key on
    the default exchange, else ``queue``, the queue behind the exchange); the Kafka topic's lag
    for consumer ``group``."""
    kind = target.broker.kind
    if kind == BrokerKind.RABBITMQ:
        if queue or not target.name:
            return DlqAddress(name=queue or target.routing_key, vhost=target.vhost)
        raise InvalidInput(f"{target.describe()}: an exchange has no depth; give queue (the queue behind it)")
    if kind == BrokerKind.KAFKA:
        if not group:
            raise InvalidInput(f"{target.describe()}: a topic's lag is per consumer group; give group")
        return DlqAddress(name=target.name, group=group)
    return DlqAddress(name=target.name)


@dataclass(frozen=True)
class DepthReading:
    target: PlanTarget
    depth: int | None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target.describe(), "depth": self.depth, "error": self.error}


def read_depths(targets: list[PlanTarget], *, group: str = "", queue: str = "") -> list[DepthReading]:
    """The depth (queue) or lag (Kafka group) of each target, one broker session per broker;
    a target that cannot be read carries the error instead."""
    readings = []
    for broker, group_targets in by_broker(targets).items():
        try:
            with broker_session(broker, timeout=PROBE_TIMEOUT_S) as adapter:
                for target in group_targets:
                    try:
                        depth = adapter.depth(depth_address(target, group=group, queue=queue))
                    except RecoveryError as exc:
                        readings.append(DepthReading(target, None, describe_error(exc)))
                    else:
                        readings.append(DepthReading(target, depth))
        except RecoveryError as exc:
            readings.extend(DepthReading(t, None, describe_error(exc)) for t in group_targets)
    return readings


# -- HTTP --------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A health check reports the status it got: a redirect (to a login page, say) is not a 200."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


@dataclass(frozen=True)
class HttpAnswer:
    url: str
    status: int | None
    error: str
    elapsed_ms: float

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "status": self.status, "error": self.error, "elapsed_ms": round(self.elapsed_ms, 1)}

    def describe(self, expected: int) -> str:
        if self.status is None:
            return f"{self.url} did not answer: {self.error}"
        verdict = "as expected" if self.status == expected else f"expected {expected}"
        return f"{self.url} answered {self.status} ({verdict}) in {self.elapsed_ms:.0f} ms"


def http_get(url: str, *, timeout_s: float) -> HttpAnswer:
    """GET ``url`` once, following no redirect; never raises."""
    if urlsplit(url).scheme not in ("http", "https"):
        return HttpAnswer(url, None, "not an http(s) URL", 0.0)
    request = urllib.request.Request(url, headers={"User-Agent": "dlq-console-check/1"})  # noqa: S310 - http(s) only
    started = time.monotonic()
    status, error = None, ""
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # 3xx, 4xx, 5xx: an answer all the same
        status = exc.code
        exc.close()
    except urllib.error.URLError as exc:
        error = f"no answer within {timeout_s:g} s" if isinstance(exc.reason, TimeoutError) else str(exc.reason)
    except TimeoutError:
        error = f"no answer within {timeout_s:g} s"
    except (OSError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return HttpAnswer(url, status, error[:300], (time.monotonic() - started) * 1000)


HTTP_PARAMS = (Param("url", http_url), Param("expected_status", HTTP_STATUS, 200), Param("timeout_s", TIMEOUT_S, 3))
DEPTH_PARAMS = (Param("group", text(200), ""), Param("queue", text(300), ""))


def describe_count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def percent(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0") + "%"
