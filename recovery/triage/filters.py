"""The letters filter: one parsed, validated description of a set of dead letters.

The same filter drives the letters list, its estimated total, bulk actions on "the whole filter
result" and replay plans drafted from it, so what an operator sees is what an action touches.
It round-trips through query parameters (``from_params`` / ``as_params``) and JSON (stored on
triage actions and plans). Bad input is refused with a message, never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from recovery.errors import InvalidInput
from recovery.models import IN_PROGRESS_STATES, OPEN_STATES, Category, DeadLetter, DeadLetterState, Disposition

SORTS = {
    # name: (column, descending, label)
    "newest": ("captured_at", True, "Newest captured first"),
    "oldest": ("captured_at", False, "Oldest captured first"),
    "age": ("first_failed_at", False, "Oldest failure first"),
    "expiry": ("expires_at", False, "Expiring first"),
}
DEFAULT_SORT = "newest"
MAX_TEXT = 200
# Where a letter is in its lifecycle (issue 15): lists show open work unless told otherwise.
WORK = {
    "open": ("Open work", OPEN_STATES),
    "in_progress": ("In a plan or replayed, not verified yet", IN_PROGRESS_STATES),
    "closed": ("Held, discarded, resolved or returned", (DeadLetterState.HELD, DeadLetterState.DISCARDED,
                                                          DeadLetterState.RESOLVED, DeadLetterState.RETURNED)),
    "all": ("All letters", ()),
}  # fmt: skip
DEFAULT_WORK = "open"
PARAM_NAMES = {"expiring_within_hours": "expiring", "ids": "id"}  # field -> query parameter


@dataclass(frozen=True)
class LetterFilter:
    dlq: tuple[int, ...] = ()
    category: tuple[str, ...] = ()
    disposition: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    fingerprint: str = ""
    origin: str = ""
    since: datetime | None = None
    until: datetime | None = None
    expiring_within_hours: int | None = None
    q: str = ""
    ids: tuple[int, ...] = field(default=())
    max_id: int | None = None  # set when a selection is frozen: later letters never join it
    work: str = ""  # a WORK key; empty: every state (the letters list defaults to "open"); ``state`` overrides it

    # -- parsing ---------------------------------------------------------------------------------

    @classmethod
    def from_params(cls, params: Any) -> LetterFilter:
        """From a QueryDict (or a dict of lists/strings). Raises InvalidInput naming the field."""

        def many(name: str) -> list[str]:
            if hasattr(params, "getlist"):
                values = params.getlist(name)
            else:
                raw = params.get(name, [])
                values = raw if isinstance(raw, list | tuple) else [raw]
            return [str(v).strip() for v in values if str(v).strip()]

        def one(name: str) -> str:
            values = many(name)
            return values[-1] if values else ""

        return cls(
            dlq=tuple(_ints(many("dlq"), "dlq")),
            category=tuple(_choices(many("category"), Category.values, "category")),
            disposition=tuple(_choices(many("disposition"), Disposition.values, "disposition")),
            state=tuple(_choices(many("state"), DeadLetterState.values, "state")),
            fingerprint=_hex(one("fingerprint")),
            origin=one("origin")[:500],
            since=_when(one("since"), "since"),
            until=_when(one("until"), "until"),
            expiring_within_hours=_optional_int(one("expiring"), "expiring", maximum=24 * 365),
            q=one("q")[:MAX_TEXT],
            ids=tuple(_ints(many("id"), "id")),
            max_id=_optional_int(one("max_id"), "max_id"),
            work=_choices([one("work")], list(WORK), "work")[0] if one("work") else "",
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LetterFilter:
        """From the JSON stored on a triage action or a plan (``as_json``)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InvalidInput(f"unknown filter field(s): {', '.join(sorted(unknown))}")
        return cls.from_params({PARAM_NAMES.get(k, k): v for k, v in data.items() if v not in (None, "", [], ())})

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in asdict(self).items():
            if value in (None, "", (), []):
                continue
            if isinstance(value, datetime):  # "Z", not "+00:00": a "+" in a hand-made link reads as a space
                value = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def as_params(self) -> list[tuple[str, str]]:
        """Query parameters that parse back to this filter (for links and hidden form fields)."""
        pairs: list[tuple[str, str]] = []
        for name, value in self.as_json().items():
            key = PARAM_NAMES.get(name, name)
            for item in value if isinstance(value, list) else [value]:
                pairs.append((key, str(item)))
        return pairs

    @property
    def is_empty(self) -> bool:
        return not self.as_json()

    def frozen(self) -> LetterFilter:
        """The same filter bounded to the letters that exist now (a selection for an action)."""
        if self.max_id is not None:
            return self
        newest = DeadLetter.objects.order_by("-id").values_list("id", flat=True).first() or 0
        return LetterFilter(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "max_id": newest})

    def describe(self) -> str:
        """A short human description for audit summaries and plan pages."""
        parts = []
        if self.ids:
            parts.append(f"{len(self.ids)} picked letter(s)")
        for name in ("dlq", "category", "disposition", "state"):
            values = getattr(self, name)
            if values:
                parts.append(f"{name} {', '.join(map(str, values))}")
        if self.fingerprint:
            parts.append(f"fingerprint {self.fingerprint[:12]}")
        if self.origin:
            parts.append(f"origin {self.origin}")
        if self.since or self.until:
            parts.append(f"captured {self.since or '…'} to {self.until or '…'}")
        if self.expiring_within_hours is not None:
            parts.append(f"expiring within {self.expiring_within_hours} h")
        if self.q:
            parts.append(f"text {self.q!r}")
        if self.work and self.work != "all" and not self.state:
            parts.append(WORK[self.work][0].lower())
        return "; ".join(parts) or "all letters"

    # -- querying --------------------------------------------------------------------------------

    def apply(self, letters: QuerySet[DeadLetter] | None = None) -> QuerySet[DeadLetter]:
        letters = DeadLetter.objects.all() if letters is None else letters
        q = Q()
        if self.ids:
            q &= Q(pk__in=self.ids)
        if self.dlq:
            q &= Q(dlq_id__in=self.dlq)
        if self.category:
            q &= Q(category__in=self.category)
        if self.disposition:
            q &= Q(disposition__in=self.disposition)
        if self.state:
            q &= Q(state__in=self.state)
        if self.work and WORK[self.work][1] and not self.state:  # states picked one by one win
            q &= Q(state__in=[state.value for state in WORK[self.work][1]])
        if self.fingerprint:
            q &= Q(fingerprint=self.fingerprint)
        if self.origin:
            q &= Q(origin=self.origin)
        if self.since:
            q &= Q(captured_at__gte=self.since)
        if self.until:
            q &= Q(captured_at__lt=self.until)
        if self.expiring_within_hours is not None:
            now = timezone.now()
            q &= Q(expires_at__gte=now, expires_at__lt=now + timedelta(hours=self.expiring_within_hours))
        if self.q:
            # search_text is lower-cased at classification; the trigram index serves ILIKE.
            q &= Q(search_text__contains=self.q.lower())
        if self.max_id is not None:
            q &= Q(pk__lte=self.max_id)
        return letters.filter(q)


def _ints(values: list[str], name: str) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise InvalidInput(f"{name}: expected whole numbers, got {', '.join(values)[:100]!r}") from None
    if any(v < 1 for v in out):
        raise InvalidInput(f"{name}: expected positive numbers")
    return out


def _optional_int(value: str, name: str, maximum: int | None = None) -> int | None:
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{name}: expected a whole number, got {value[:50]!r}") from None
    if number < 0 or (maximum is not None and number > maximum):
        raise InvalidInput(f"{name}: out of range")
    return number


def _choices(values: list[str], allowed: list[str], name: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise InvalidInput(f"{name}: unknown value {bad[0][:50]!r} (one of {', '.join(allowed)})")
    return values


def _hex(value: str) -> str:
    if value and (len(value) > 64 or any(c not in "0123456789abcdef" for c in value)):
        raise InvalidInput("fingerprint: expected a hexadecimal fingerprint")
    return value


def _when(value: str, name: str) -> datetime | None:
    if not value:
        return None
    parsed = parse_datetime(value) or (parse_datetime(value + "T00:00") if len(value) == 10 else None)
    if parsed is None:
        raise InvalidInput(f"{name}: expected a date and time like 2026-11-21T14:30, got {value[:50]!r}")
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
