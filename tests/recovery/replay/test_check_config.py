"""Saving a plan validates its preconditions, stop conditions and verification steps: an
unknown name, a missing or bad parameter is refused with a message saying which entry and what."""

from __future__ import annotations

import pytest

from recovery.errors import InvalidInput
from recovery.replay.checks import registered_names, validate_config

PRE, STOP, VERIFY = "preconditions", "stop_conditions", "verifications"


def test_it_lists_the_registered_checks_of_each_kind() -> None:
    assert registered_names(PRE) == [
        "dispositions_allow", "http_health", "json_schema", "no_other_active_run_on_target", "not_near_expiry",
        "sqs_fifo_cooldown", "target_depth_below", "target_reachable", "time_window",
    ]  # fmt: skip
    assert registered_names(STOP) == [
        "consecutive_failures", "health_check_failing", "max_duration", "publish_error_rate", "redeadletter_rate",
        "target_depth_above",
    ]  # fmt: skip
    assert registered_names(VERIFY) == [
        "http_check", "letters_resolved", "no_redeadletter_within", "target_depth_below_within"
    ]  # fmt: skip


def test_it_accepts_every_check_with_good_parameters_and_fills_defaults() -> None:
    pre = validate_config(PRE, [
        {"check": "target_reachable"},
        {"check": "target_depth_below", "max": 500},
        {"check": "target_depth_below", "max": 10, "group": "orders-service"},
        {"check": "http_health", "url": "https://orders.internal/health"},
        {"check": "no_other_active_run_on_target"},
        {"check": "time_window", "start": "22:00", "end": "02:00", "days": ["Friday", "Mon", "fri"],
         "timezone": "Europe/Berlin"},
        {"check": "dispositions_allow"},
        {"check": "not_near_expiry", "min_hours": 0.5},
        {"check": "json_schema"},
        {"check": "sqs_fifo_cooldown"},
    ])  # fmt: skip
    assert pre[1] == {"check": "target_depth_below", "max": 500, "group": "", "queue": ""}
    assert pre[3] == {"check": "http_health", "url": "https://orders.internal/health", "expected_status": 200,
                      "timeout_s": 3}  # fmt: skip
    assert pre[5]["days"] == ["mon", "fri"]
    stop = validate_config(STOP, [
        {"condition": "redeadletter_rate", "max_percent": 5, "window_s": 60},
        {"condition": "publish_error_rate", "max_percent": 2.5, "window_s": 30, "action": "abort"},
        {"condition": "target_depth_above", "max": 10000, "queue": "orders"},
        {"condition": "health_check_failing", "url": "http://127.0.0.1:8080/health", "expected_status": 204},
        {"condition": "consecutive_failures", "max": 5},
        {"condition": "max_duration", "seconds": 3600},
    ])  # fmt: skip
    assert stop[0] == {"condition": "redeadletter_rate", "max_percent": 5, "window_s": 60, "min_published": 5,
                       "action": "pause"}  # fmt: skip
    assert stop[1]["action"] == "abort"
    verify = validate_config(VERIFY, [
        {"step": "no_redeadletter_within", "seconds": 120},
        {"step": "target_depth_below_within", "max": 1, "seconds": 300},
        {"step": "http_check", "url": "http://orders/check", "expected_status": 200},
    ])  # fmt: skip
    assert [v["step"] for v in verify] == ["no_redeadletter_within", "target_depth_below_within", "http_check"]


def test_it_accepts_an_empty_or_missing_list() -> None:
    assert validate_config(PRE, []) == []
    assert validate_config(STOP, None) == []


@pytest.mark.parametrize(
    ("kind", "entries", "message"),
    [
        (PRE, [{"check": "target_reachble"}], "precondition 1: unknown check 'target_reachble'; known: dispositions"),
        (STOP, [{"check": "max_duration", "seconds": 5}], 'stop condition 1: no "condition" naming it; known:'),
        (VERIFY, ["http_check"], "verification step 1: an object such as"),
        (PRE, {"check": "target_reachable"}, "preconditions: a list of objects (got dict)"),
        (STOP, [{"condition": "max_duration"}], "stop condition 1 (max_duration): seconds is missing"),
        (
            PRE,
            [{"check": "json_schema"}, {"check": "target_depth_below", "maxx": 5}],
            "precondition 2 (target_depth_below): unknown parameter maxx (it takes max, group, queue)",
        ),
        (PRE, [{"check": "json_schema", "strict": True}], "unknown parameter strict (it takes no parameters)"),
    ],
)
def test_it_rejects_unknown_names_and_parameters(kind, entries, message) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_config(kind, entries)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "entry", "message"),
    [
        (PRE, {"check": "target_depth_below", "max": 0}, "max: a whole number from 1 to 1,000,000,000 (got 0)"),
        (PRE, {"check": "target_depth_below", "max": "500"}, "max: a whole number from 1 to"),
        (PRE, {"check": "target_depth_below", "max": True}, "max: a whole number from 1 to"),
        (PRE, {"check": "not_near_expiry", "min_hours": 0}, "min_hours: a number above 0 and at most 8760 (got 0)"),
        (PRE, {"check": "not_near_expiry", "min_hours": float("nan")}, "min_hours: a number above 0"),
        (STOP, {"condition": "redeadletter_rate", "max_percent": -5, "window_s": 60}, "max_percent: a number above 0"),
        (STOP, {"condition": "redeadletter_rate", "max_percent": 150, "window_s": 60}, "at most 100 (got 150)"),
        (STOP, {"condition": "publish_error_rate", "max_percent": 5, "window_s": 0}, "window_s: a whole number from 1"),
        (STOP, {"condition": "consecutive_failures", "max": -1}, "max: a whole number from 1"),
        (STOP, {"condition": "max_duration", "seconds": 0}, "seconds: a whole number from 1"),
        (STOP, {"condition": "max_duration", "seconds": 60, "action": "explode"}, "action: one of pause, abort"),
        (VERIFY, {"step": "no_redeadletter_within", "seconds": -30}, "seconds: a whole number from 1"),
        (VERIFY, {"step": "target_depth_below_within", "max": 0, "seconds": 60}, "max: a whole number from 1"),
        (VERIFY, {"step": "target_depth_below_within", "max": 5}, "seconds is missing"),
        (PRE, {"check": "http_health", "expected_status": 200}, "url is missing"),
        (PRE, {"check": "http_health", "url": "ftp://host/health"}, "url: an http:// or https:// URL"),
        (PRE, {"check": "http_health", "url": "file:///etc/passwd"}, "url: an http:// or https:// URL"),
        (PRE, {"check": "http_health", "url": "localhost:8080/health"}, "url: an http:// or https:// URL"),
        (PRE, {"check": "http_health", "url": "http://"}, "with a host"),
        (PRE, {"check": "http_health", "url": "http://host:port/"}, "url: an http:// or https:// URL"),
        (STOP, {"condition": "health_check_failing", "url": "http://h/", "expected_status": 42}, "from 100 to 599"),
        (VERIFY, {"step": "http_check", "url": "http://h/", "timeout_s": 120}, "timeout_s: a number above 0"),
        (PRE, {"check": "target_depth_below", "max": 5, "group": ""}, "group: a non-empty text"),
    ],
)
def test_it_rejects_bad_parameters(kind, entry, message) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_config(kind, [entry])
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"start": "25:00", "end": "02:00"}, "start: a time of day as \"HH:MM\", 00:00 to 23:59 (got '25:00')"),
        ({"start": "9:00", "end": "17:00"}, "start: a time of day"),
        ({"start": "09:00", "end": "17:60"}, "end: a time of day"),
        ({"start": "09:00"}, "end is missing"),
        ({"start": "09:00", "end": "09:00"}, "start and end are equal"),
        ({"start": "09:00", "end": "17:00", "days": []}, "days: a non-empty list of days"),
        ({"start": "09:00", "end": "17:00", "days": ["mon", "someday"]}, "days: days from mon, tue"),
        ({"start": "09:00", "end": "17:00", "days": ["monkey"]}, "days: days from mon, tue"),
        ({"start": "09:00", "end": "17:00", "days": "mon"}, "days: a non-empty list"),
        ({"start": "09:00", "end": "17:00", "timezone": "Mars/Olympus"}, "timezone: an IANA time zone"),
    ],
)
def test_it_rejects_a_bad_time_window(window, message) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_config(PRE, [{"check": "time_window", **window}])
    assert f"precondition 1 (time_window): {message}" in str(caught.value)


def test_it_refuses_too_many_entries() -> None:
    with pytest.raises(InvalidInput, match="at most 20"):
        validate_config(STOP, [{"condition": "max_duration", "seconds": 60}] * 21)
