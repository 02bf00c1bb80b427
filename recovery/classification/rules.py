"""Rule conditions: their schema, their validation, and the matcher that applies ordered rules
to a letter (DESIGN "rule / category / disposition"). Pure: no queries, no writes.

A rule's ``conditions`` is a JSON list; all of them must hold. One condition is an object:

=================  ===============================================  ===============================
field              op                                               other keys
=================  ===============================================  ===============================
dlq                in                                               value: [dlq ids]
origin, reason,    eq, regex                                        value: text / pattern
error_class,
error_message,
content_type
header             eq, regex, exists                                name: header or property name
body_json          eq, ne, lt, gt, exists, regex                    path: $.a.b[0].c; value: JSON
body               not_utf8, not_json                               (none)
age                older_than, younger_than                         value: seconds; since:
                                                                    captured_at | first_failed_at
attempt_count      gte, lte                                         value: integer
=================  ===============================================  ===============================

``header`` looks in the headers, then in the properties (SQS attributes, AMQP properties, the
Kafka record's fields), by exact name and then case-insensitively. ``ne`` holds when the path is
missing too; ``lt``/``gt`` compare numbers with numbers and text with text, nothing else.

The first enabled rule whose conditions all hold gives the letter its category and
disposition; when none does, the letter is ``unknown``/``hold``, classified by ``default``.
Evaluation never raises on hostile letters (invariant 10): bodies are decoded and parsed once
(``LetterFacts``), regular expressions see at most 64 KiB (``patterns``), and a condition that
cannot be evaluated does not hold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recovery.classification import jsonpath, patterns
from recovery.classification.subject import NOT_JSON, LetterFacts, value_text
from recovery.errors import InvalidInput
from recovery.models import Category, ClassificationSource, Disposition

logger = logging.getLogger(__name__)

MAX_CONDITIONS = 20
MAX_TEXT = 1000
MAX_SECONDS = 100 * 365 * 86400

TEXT_FIELDS = ("origin", "reason", "error_class", "error_message", "content_type")
FIELD_OPS: dict[str, tuple[str, ...]] = {
    "dlq": ("in",),
    **{name: ("eq", "regex") for name in TEXT_FIELDS},
    "header": ("eq", "regex", "exists"),
    "body_json": ("eq", "ne", "lt", "gt", "exists", "regex"),
    "body": ("not_utf8", "not_json"),
    "age": ("older_than", "younger_than"),
    "attempt_count": ("gte", "lte"),
}
FIELD_LABELS = {
    "dlq": "dead-letter queue",
    "origin": "origin",
    "reason": "reason",
    "error_class": "error class",
    "error_message": "error message",
    "content_type": "content type",
    "header": "header / attribute",
    "body_json": "body JSON path",
    "body": "body",
    "age": "age",
    "attempt_count": "attempt count",
}
OP_ALIASES = {"equals": "eq", "==": "eq", "=": "eq", "!=": "ne", ">=": "gte", "<=": "lte", "<": "lt", ">": "gt"}
AGE_SINCE = ("captured_at", "first_failed_at")
_KEYS = {"field", "op", "value", "name", "path", "since"}

Predicate = Callable[[LetterFacts, datetime], bool]


@dataclass(frozen=True)
class Outcome:
    category: str
    disposition: str
    source: str
    rule_id: int | None = None


DEFAULT_OUTCOME = Outcome(Category.UNKNOWN.value, Disposition.HOLD.value, ClassificationSource.DEFAULT.value)


# -- validation --------------------------------------------------------------------------------


def _text_value(where: str, value: Any, *, what: str = "value") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{where}: '{what}' must be non-empty text")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{where}: '{what}' is longer than {MAX_TEXT} characters")
    return value


def _pattern(where: str, value: Any) -> str:
    value = _text_value(where, value)
    try:
        patterns.compile_pattern(value)
    except patterns.UnsafePattern as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    return value


def _integer(where: str, value: Any, *, maximum: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidInput(f"{where}: 'value' must be a whole number from 0 to {maximum}")
    return value


def _validate_one(index: int, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput(f'condition {index}: must be an object like {{"field": ..., "op": ...}}')
    name = raw.get("field")
    if name not in FIELD_OPS:
        raise InvalidInput(f"condition {index}: unknown field {name!r} (one of {', '.join(FIELD_OPS)})")
    where = f"condition {index} ({name})"
    unknown = set(raw) - _KEYS
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    op = raw.get("op")
    op = OP_ALIASES.get(op, op) if isinstance(op, str) else op
    if op not in FIELD_OPS[name]:
        raise InvalidInput(f"{where}: unknown op {raw.get('op')!r} (one of {', '.join(FIELD_OPS[name])})")
    value = raw.get("value")
    clean: dict[str, Any] = {"field": name, "op": op}
    if name == "dlq":
        if not isinstance(value, list) or not value or len(value) > 1000:
            raise InvalidInput(f"{where}: 'value' must be a non-empty list of dead-letter queue ids")
        clean["value"] = sorted({_integer(where, v, maximum=2**63 - 1) for v in value})
    elif name in TEXT_FIELDS:
        clean["value"] = _pattern(where, value) if op == "regex" else _text_value(where, value)
    elif name == "header":
        clean["name"] = _text_value(where, raw.get("name"), what="name")
        if op != "exists":
            clean["value"] = _pattern(where, value) if op == "regex" else _text_value(where, value)
    elif name == "body_json":
        path = _text_value(where, raw.get("path"), what="path")
        try:
            jsonpath.parse_path(path)
        except ValueError as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        clean["path"] = path
        if op == "regex":
            clean["value"] = _pattern(where, value)
        elif op in ("lt", "gt"):
            if not (isinstance(value, str) or _is_number(value)):
                raise InvalidInput(f"{where}: 'value' of {op} must be a number or text")
            clean["value"] = value
        elif op in ("eq", "ne"):
            if isinstance(value, dict | list) or (isinstance(value, float) and not math.isfinite(value)):
                raise InvalidInput(f"{where}: 'value' must be text, a number, true, false or null")
            clean["value"] = value
    elif name == "age":
        clean["value"] = _integer(where, value, maximum=MAX_SECONDS)
        since = raw.get("since") or "captured_at"
        if since not in AGE_SINCE:
            raise InvalidInput(f"{where}: 'since' must be one of {', '.join(AGE_SINCE)}")
        clean["since"] = since
    elif name == "attempt_count":
        clean["value"] = _integer(where, value, maximum=10**9)
    return clean


def validate_conditions(raw: Any) -> list[dict[str, Any]]:
    """The conditions in their canonical form, or InvalidInput naming the first bad one
    (numbered from 1, as the editor shows them)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput("conditions must be a list of objects")
    if len(raw) > MAX_CONDITIONS:
        raise InvalidInput(f"a rule has at most {MAX_CONDITIONS} conditions")
    return [_validate_one(index, item) for index, item in enumerate(raw, start=1)]


# -- evaluation --------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return left == right


def _json_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if value is jsonpath.MISSING or isinstance(value, dict | list):
        return None
    return value_text(value)


def _ordered(op: str, left: Any, right: Any) -> bool:
    if _is_number(left) and _is_number(right) or isinstance(left, str) and isinstance(right, str):
        return left < right if op == "lt" else left > right
    return False


# Fields with few distinct values across letters (classes, origins): a pattern's answer for
# each value is remembered, so a million letters cost a few hundred regex searches.
FEW_VALUES = ("origin", "reason", "error_class", "content_type")
MEMO_SIZE = 10_000


def _text_predicate(name: str, op: str, value: str) -> Predicate:
    if op == "eq":
        return lambda facts, _now: getattr(facts, name) == value
    compiled = patterns.compile_pattern(value)
    if name not in FEW_VALUES:
        if compiled.lowered is not None:
            return lambda facts, _now: patterns.search(compiled, "", facts.lowered(name))
        return lambda facts, _now: patterns.search(compiled, getattr(facts, name) or "")
    memo: dict[str, bool] = {}

    def matches(facts: LetterFacts, _now: datetime) -> bool:
        text = getattr(facts, name) or ""
        found = memo.get(text)
        if found is None:
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            found = memo[text] = patterns.search(compiled, text)
        return found

    return matches


def _header_predicate(condition: dict[str, Any]) -> Predicate:
    name, op = condition["name"], condition["op"]
    if op == "exists":
        return lambda facts, _now: facts.header(name) is not None
    if op == "eq":
        expected = condition["value"]
        return lambda facts, _now: value_text(facts.header(name)) == expected
    compiled = patterns.compile_pattern(condition["value"])

    def matches(facts: LetterFacts, _now: datetime) -> bool:
        text = value_text(facts.header(name))
        return text is not None and patterns.search(compiled, text)

    return matches


def _json_predicate(condition: dict[str, Any]) -> Predicate:
    steps, op, expected = jsonpath.parse_path(condition["path"]), condition["op"], condition.get("value")
    compiled = patterns.compile_pattern(expected) if op == "regex" else None

    def matches(facts: LetterFacts, _now: datetime) -> bool:
        document = facts.json()
        found = jsonpath.MISSING if document is NOT_JSON else jsonpath.resolve(document, steps)
        if op == "ne":
            return found is jsonpath.MISSING or not _json_equal(found, expected)
        if found is jsonpath.MISSING:
            return False
        if op == "exists":
            return True
        if op == "eq":
            return _json_equal(found, expected)
        if compiled is not None:
            text = _json_text(found)
            return text is not None and patterns.search(compiled, text)
        return _ordered(op, found, expected)

    return matches


def _age_predicate(condition: dict[str, Any]) -> Predicate:
    seconds, since, older = condition["value"], condition["since"], condition["op"] == "older_than"

    def matches(facts: LetterFacts, now: datetime) -> bool:
        start = getattr(facts, since)
        if start is None:
            return False
        age = (now - start).total_seconds()
        return age > seconds if older else age < seconds

    return matches


def _predicate(condition: dict[str, Any]) -> Predicate:
    name, op, value = condition["field"], condition["op"], condition.get("value")
    if name == "dlq":
        ids = frozenset(value)
        return lambda facts, _now: facts.dlq_id in ids
    if name in TEXT_FIELDS:
        return _text_predicate(name, op, value)
    if name == "header":
        return _header_predicate(condition)
    if name == "body_json":
        return _json_predicate(condition)
    if name == "body":
        if op == "not_utf8":
            return lambda facts, _now: facts.text() is None
        return lambda facts, _now: facts.json() is NOT_JSON
    if name == "age":
        return _age_predicate(condition)
    if op == "gte":
        return lambda facts, _now: facts.attempt_count is not None and facts.attempt_count >= value
    return lambda facts, _now: facts.attempt_count is not None and facts.attempt_count <= value


# Cheap conditions first, so most rules are decided before a body is decoded or parsed.
_COST = {"dlq": 0, "attempt_count": 0, "age": 0, "header": 2, "body": 6, "body_json": 8}


def _cost(condition: dict[str, Any]) -> int:
    base = _COST.get(condition["field"], 1)
    return base + (2 if condition["op"] == "regex" else 0) + (1 if condition["field"] == "error_message" else 0)


def compile_conditions(conditions: list[dict[str, Any]]) -> tuple[Predicate, ...]:
    """Predicates for validated conditions, cheapest first."""
    return tuple(_predicate(c) for c in sorted(conditions, key=_cost))


def needs_body(conditions: Iterable[dict[str, Any]]) -> bool:
    return any(c.get("field") in ("body", "body_json") for c in conditions)


def conditions_hold(predicates: tuple[Predicate, ...], facts: LetterFacts, now: datetime) -> bool:
    """Whether every predicate holds; one that fails on odd data counts as not holding."""
    for predicate in predicates:
        try:
            if not predicate(facts, now):
                return False
        except Exception:  # invariant 10: a hostile letter never stops classification
            return False
    return True


@dataclass(frozen=True)
class CompiledRule:
    rule_id: int | None
    name: str
    predicates: tuple[Predicate, ...]
    outcome: Outcome


class Matcher:
    """Ordered rules, compiled once; ``classify`` gives the first match's outcome."""

    def __init__(self, rules: Iterable[Any]) -> None:
        """``rules``: enabled rules in order, each with id, name, conditions, category and
        disposition (ClassificationRule rows, or anything shaped like them)."""
        self.rules: list[CompiledRule] = []
        self.needs_body = self.needs_headers = False
        for rule in rules:
            try:
                conditions = validate_conditions(rule.conditions)
            except InvalidInput:  # written around the services: skip it rather than stop classifying
                logger.warning("classification rule %s has invalid conditions; skipped", rule.id, exc_info=True)
                continue
            self.needs_body = self.needs_body or needs_body(conditions)
            self.needs_headers = self.needs_headers or any(c["field"] == "header" for c in conditions)
            outcome = Outcome(rule.category, rule.disposition, ClassificationSource.RULE.value, rule.id)
            self.rules.append(CompiledRule(rule.id, rule.name, compile_conditions(conditions), outcome))

    def classify(self, facts: LetterFacts, now: datetime) -> Outcome:
        for rule in self.rules:
            if conditions_hold(rule.predicates, facts, now):
                return rule.outcome
        return DEFAULT_OUTCOME
