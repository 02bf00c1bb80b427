"""Rule conditions: validation names the bad condition; evaluation follows the table in
recovery.classification.rules and survives hostile letters (invariant 10)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from recovery.classification import patterns
from recovery.classification.jsonpath import MISSING, parse_path, resolve
from recovery.classification.rules import DEFAULT_OUTCOME, Matcher, compile_conditions, conditions_hold
from recovery.classification.rules import validate_conditions as validate
from recovery.classification.subject import LetterFacts
from recovery.errors import InvalidInput

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def holds(condition: dict, **facts) -> bool:
    return conditions_hold(compile_conditions(validate([condition])), LetterFacts(**facts), NOW)


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ("nope", "conditions must be a list"),
        ([{"field": "colour", "op": "eq", "value": "red"}], "condition 1: unknown field 'colour'"),
        (
            [{"field": "origin", "op": "eq", "value": "a"}, {"field": "origin", "op": "gt"}],
            "condition 2 (origin): unknown op 'gt'",
        ),
        (
            [{"field": "error_class", "op": "regex", "value": "("}],
            "condition 1 (error_class): not a valid regular expression",
        ),
        (
            [{"field": "error_message", "op": "regex", "value": "(a+)+$"}],
            "condition 1 (error_message): a repetition inside a repetition",
        ),
        ([{"field": "header", "op": "exists"}], "condition 1 (header): 'name' must be non-empty text"),
        (
            [{"field": "body_json", "op": "eq", "path": "order.id", "value": 1}],
            "condition 1 (body_json): a path starts with $",
        ),
        (
            [{"field": "body_json", "op": "eq", "path": "$.a[", "value": 1}],
            "condition 1 (body_json): cannot read the path at character 4",
        ),
        ([{"field": "body_json", "op": "lt", "path": "$.a", "value": [1]}], "'value' of lt must be a number or text"),
        ([{"field": "age", "op": "older_than", "value": -5}], "condition 1 (age): 'value' must be a whole number"),
        ([{"field": "age", "op": "older_than", "value": 5, "since": "birth"}], "'since' must be one of"),
        ([{"field": "attempt_count", "op": "gte", "value": "many"}], "condition 1 (attempt_count): 'value' must be"),
        ([{"field": "dlq", "op": "in", "value": []}], "condition 1 (dlq): 'value' must be a non-empty list"),
        ([{"field": "origin", "op": "eq", "value": "a", "colour": 1}], "condition 1 (origin): unknown key(s) colour"),
        ([{"field": "origin", "op": "eq", "value": "a"}] * 21, "at most 20 conditions"),
    ],
)
def test_validation_names_the_bad_condition(conditions, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        validate(conditions)


def test_validation_canonicalises() -> None:
    assert validate([{"field": "attempt_count", "op": ">=", "value": "5"}]) == [
        {"field": "attempt_count", "op": "gte", "value": 5}
    ]
    assert validate([{"field": "age", "op": "older_than", "value": 60}])[0]["since"] == "captured_at"
    assert validate([{"field": "dlq", "op": "in", "value": [3, 1, 3]}])[0]["value"] == [1, 3]


BODY = json.dumps({"order": {"id": 42, "items": [{"sku": "A-1", "qty": 2}], "state": "paid", "gift": False}}).encode()


@pytest.mark.parametrize(
    ("condition", "facts", "expected"),
    [
        ({"field": "dlq", "op": "in", "value": [1, 2]}, {"dlq_id": 2}, True),
        ({"field": "dlq", "op": "in", "value": [1, 2]}, {"dlq_id": 3}, False),
        ({"field": "origin", "op": "eq", "value": "kafka:orders"}, {"origin": "kafka:orders"}, True),
        ({"field": "origin", "op": "regex", "value": "^sqs:"}, {"origin": "kafka:orders"}, False),
        (
            {"field": "error_class", "op": "regex", "value": "(?i)timeout"},
            {"error_class": "java.net.SocketTimeoutException"},
            True,
        ),
        (
            {"field": "error_message", "op": "regex", "value": r"(?i)read \w+ out"},
            {"error_message": "Read TIMED out"},
            True,
        ),
        ({"field": "error_message", "op": "regex", "value": "Read"}, {"error_message": "read"}, False),
        ({"field": "reason", "op": "eq", "value": "expired"}, {"reason": "expired"}, True),
        ({"field": "content_type", "op": "regex", "value": "json"}, {"content_type": "application/json"}, True),
        # headers, then properties, exact name then any case; adapter containers unwrapped
        ({"field": "header", "name": "x-tenant", "op": "eq", "value": "acme"}, {"headers": {"X-Tenant": "acme"}}, True),
        (
            {"field": "header", "name": "tenant", "op": "eq", "value": "acme"},
            {"headers": {"tenant": {"DataType": "String", "StringValue": "acme"}}},
            True,
        ),
        ({"field": "header", "name": "trace", "op": "eq", "value": "b"}, {"headers": {"trace": ["a", "b"]}}, True),
        (
            {"field": "header", "name": "bin", "op": "regex", "value": "^ab"},
            {"headers": {"bin": {"$base64": "YWLg"}}},
            True,
        ),
        ({"field": "header", "name": "priority", "op": "eq", "value": "5"}, {"properties": {"priority": 5}}, True),
        (
            {"field": "header", "name": "ApproximateReceiveCount", "op": "exists"},
            {"properties": {"ApproximateReceiveCount": "3"}},
            True,
        ),
        ({"field": "header", "name": "x-missing", "op": "exists"}, {"headers": {"x-other": 1}}, False),
        (
            {"field": "header", "name": "x-death", "op": "regex", "value": '"reason":"rejected"'},
            {"headers": {"x-death": [{"reason": "rejected"}]}},
            True,
        ),
        # body JSON paths
        ({"field": "body_json", "path": "$.order.id", "op": "eq", "value": 42}, {"body": BODY}, True),
        ({"field": "body_json", "path": "$.order.id", "op": "eq", "value": "42"}, {"body": BODY}, False),
        ({"field": "body_json", "path": "$.order.items[0].sku", "op": "regex", "value": "^A-"}, {"body": BODY}, True),
        ({"field": "body_json", "path": "$.order.items[-1].qty", "op": "gt", "value": 1}, {"body": BODY}, True),
        ({"field": "body_json", "path": "$.order.items[0].qty", "op": "lt", "value": "3"}, {"body": BODY}, False),
        ({"field": "body_json", "path": "$['order'][\"state\"]", "op": "ne", "value": "paid"}, {"body": BODY}, False),
        ({"field": "body_json", "path": "$.order.coupon", "op": "ne", "value": "X"}, {"body": BODY}, True),
        ({"field": "body_json", "path": "$.order.gift", "op": "eq", "value": 0}, {"body": BODY}, False),
        ({"field": "body_json", "path": "$.order.gift", "op": "exists"}, {"body": BODY}, True),
        ({"field": "body_json", "path": "$.order.items[5]", "op": "exists"}, {"body": BODY}, False),
        ({"field": "body_json", "path": "$.order", "op": "exists"}, {"body": b"not json"}, False),
        # body shape
        ({"field": "body", "op": "not_utf8"}, {"body": b"\xff\xfe"}, True),
        ({"field": "body", "op": "not_utf8"}, {"body": "é".encode()}, False),
        ({"field": "body", "op": "not_json"}, {"body": b"hello"}, True),
        ({"field": "body", "op": "not_json"}, {"body": b"NaN"}, True),
        ({"field": "body", "op": "not_json"}, {"body": b" [1, 2]"}, False),
        ({"field": "body", "op": "not_json"}, {"body": b"\xff{}"}, True),
        # age and attempts
        ({"field": "age", "op": "older_than", "value": 3600}, {"captured_at": NOW - timedelta(hours=2)}, True),
        ({"field": "age", "op": "younger_than", "value": 3600}, {"captured_at": NOW - timedelta(hours=2)}, False),
        (
            {"field": "age", "op": "older_than", "value": 60, "since": "first_failed_at"},
            {"captured_at": NOW - timedelta(days=1)},
            False,
        ),
        ({"field": "attempt_count", "op": "gte", "value": 5}, {"attempt_count": 5}, True),
        ({"field": "attempt_count", "op": "lte", "value": 5}, {"attempt_count": None}, False),
    ],
)
def test_conditions(condition: dict, facts: dict, expected: bool) -> None:
    assert holds(condition, **facts) is expected


def _rule(rule_id: int, conditions: list, category: str = "transient", disposition: str = "replay"):
    return SimpleNamespace(id=rule_id, name=f"r{rule_id}", conditions=conditions, category=category,
                           disposition=disposition)  # fmt: skip


def test_the_first_matching_rule_wins_and_no_match_is_unknown_hold() -> None:
    matcher = Matcher(
        [
            _rule(1, [{"field": "error_class", "op": "regex", "value": "Timeout"}]),
            _rule(2, [{"field": "origin", "op": "eq", "value": "kafka:orders"}], "business", "hold"),
            _rule(3, [], "poison", "hold"),
        ]
    )
    first = matcher.classify(LetterFacts(error_class="SocketTimeoutException", origin="kafka:orders"), NOW)
    assert (first.rule_id, first.category, first.source) == (1, "transient", "rule")
    assert matcher.classify(LetterFacts(error_class="X", origin="kafka:orders"), NOW).rule_id == 2
    assert matcher.classify(LetterFacts(), NOW).rule_id == 3
    assert Matcher([]).classify(LetterFacts(), NOW) == DEFAULT_OUTCOME
    assert (DEFAULT_OUTCOME.category, DEFAULT_OUTCOME.disposition, DEFAULT_OUTCOME.source) == (
        "unknown",
        "hold",
        "default",
    )


def test_a_stored_rule_with_invalid_conditions_is_skipped_not_fatal() -> None:
    matcher = Matcher([_rule(1, [{"field": "colour"}]), _rule(2, [])])
    assert matcher.classify(LetterFacts(), NOW).rule_id == 2


def test_the_matcher_knows_what_it_must_read() -> None:
    assert not Matcher([_rule(1, [{"field": "origin", "op": "eq", "value": "x"}])]).needs_body
    assert Matcher([_rule(1, [{"field": "body", "op": "not_json"}])]).needs_body
    assert Matcher([_rule(1, [{"field": "header", "name": "a", "op": "exists"}])]).needs_headers


# -- hostile letters -----------------------------------------------------------------------------

DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.mark.parametrize(
    ("condition", "facts", "expected"),
    [
        ({"field": "body", "op": "not_json"}, {"body": DEEP}, True),
        ({"field": "body_json", "path": "$[0]", "op": "exists"}, {"body": DEEP}, False),
        ({"field": "body", "op": "not_json"}, {"body": b'{"a": "' + b"x" * (10 << 20) + b'"}'}, False),
        ({"field": "body", "op": "not_utf8"}, {"body": b"a" * (10 << 20) + b"\xff"}, True),
        ({"field": "body", "op": "not_json"}, {"body": b"1" * 5000}, True),  # int above Python's digit limit
        ({"field": "header", "name": "h", "op": "regex", "value": "x"}, {"headers": {"h": {"$base64": "!!"}}}, False),
        ({"field": "header", "name": "h", "op": "exists"}, {"headers": ["not", "a", "dict"]}, False),
        (
            {"field": "body_json", "path": "$.a", "op": "regex", "value": "b$"},
            {"body": b'{"a": "' + b"a" * 200_000 + b'b"}'},
            False,
        ),
    ],
    ids=[
        "deep-json",
        "deep-json-path",
        "10MiB-json",
        "10MiB-not-utf8",
        "huge-int",
        "bad-base64",
        "headers-list",
        "regex-window",
    ],
)
def test_hostile_letters_never_raise(condition: dict, facts: dict, expected: bool) -> None:
    assert holds(condition, **facts) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a+)+$", "repetition inside a repetition"),
        (r"(\w+\s?)*$", "repetition inside a repetition"),
        ("(a{1,100})+", "repetition inside a repetition"),
        ("(a|ab)*c", "repeated alternation"),
        ("(?:x|y+)+z", "repeated alternation"),
        ("a*a*b", "two unbounded repetitions"),
        (r"\w+\d*x", "two unbounded repetitions"),
        ("(?i)a*A*b", "two unbounded repetitions"),
        ("order .* failed .* timeout", "two unbounded repetitions"),
        (r"a\d+b\d+c\d+d\d+", "more than 3 unbounded repetitions"),
    ],
)
def test_catastrophic_patterns_are_refused(pattern: str, problem: str) -> None:
    with pytest.raises(patterns.UnsafePattern, match=problem):
        patterns.compile_pattern(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "(a++)+$",
        "(?>a+)+$",
        "(ab)+c",
        "a+b+",
        r"\w+\s+\w+",
        r"(\d{1,3}\.){3}\d{1,3}",
        "(foo|bar)+",
        "order .{0,200} failed .* timeout",
        ".*timeout.*",
        "(?i)time.*out",
    ],
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    patterns.compile_pattern(pattern)


def test_a_pattern_sees_at_most_the_window() -> None:
    # quadratic on 10 MiB would take hours; on the 16 KiB window it takes moments
    started = time.monotonic()
    assert not holds({"field": "error_message", "op": "regex", "value": "a*b"}, error_message="a" * (10 << 20))
    assert not holds({"field": "header", "name": "h", "op": "regex", "value": "a*b"}, headers={"h": "a" * (10 << 20)})
    assert time.monotonic() - started < 5
    assert patterns.compile_pattern(".*timeout.*").regex.pattern == "timeout"  # redundant .* dropped


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("(?i)timeout", "SocketTimeoutException", True),
        ("(?i)[A-Z]+Error", "decodeerror", True),
        (r"(?i)\D+\d", "abc1", True),
        (r"(?i)\x41", "a", True),  # escapes that name letters stay off the lower-case path
        ("(?i)a(?-i:B)", "ab", False),
        ("(?i)ß", "SS", False),
    ],
)
def test_case_insensitive_patterns_answer_like_re(pattern: str, text: str, expected: bool) -> None:
    compiled = patterns.compile_pattern(pattern)
    assert patterns.search(compiled, text) is expected
    assert (re.search(pattern, text) is not None) is expected


def test_json_paths() -> None:
    doc = {"a": {"b c": [10, {"d": None}]}}
    assert resolve(doc, parse_path("$['a']['b c'][1].d")) is None
    assert resolve(doc, parse_path("$.a.x")) is MISSING
    assert resolve(doc, parse_path("$.a['b c'][-2]")) == 10
    assert resolve([1], parse_path("$.a")) is MISSING
    assert resolve(doc, parse_path("$")) == doc
