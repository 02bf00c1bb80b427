"""The canonical form is stable: the same event always hashes the same, whatever key order or
JSON round trip it went through, and hostile text cannot break it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recovery.audit.canonical import (
    canonical_json,
    checkpoint_signature,
    clean_text,
    event_content,
    event_hash,
    key_id,
    normalise_json,
)


def _content(**overrides):
    base = dict(
        seq=1, at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), actor_id=None, actor_name="system:test",
        client_ip="", user_agent="", request_id="", trace_id="", action="auth.login", object_type="",
        object_id="", summary="s", before=None, after={"b": 1, "a": [1, 2]}, reason="", prev_hash="0" * 64,
    )  # fmt: skip
    base.update(overrides)
    return event_content(**base)


def test_key_order_does_not_change_the_hash() -> None:
    assert event_hash(_content(after={"a": [1, 2], "b": 1})) == event_hash(_content(after={"b": 1, "a": [1, 2]}))


def test_every_field_is_covered_by_the_hash() -> None:
    original = event_hash(_content())
    for field, value in [
        ("seq", 2),
        ("summary", "t"),
        ("actor_name", "x"),
        ("prev_hash", "1" * 64),
        ("reason", "r"),
    ]:
        assert event_hash(_content(**{field: value})) != original, field


def test_times_are_written_with_microseconds_in_utc() -> None:
    assert _content()["at"] == "2026-01-02T03:04:05.000000+00:00"


def test_canonical_json_is_compact_sorted_and_keeps_unicode() -> None:
    assert canonical_json({"b": "é", "a": 1}) == '{"a":1,"b":"é"}'


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_nul_characters_are_replaced_for_postgres() -> None:
    assert clean_text("a\x00b") == "a\ufffdb"
    assert normalise_json({"k": "a\x00b"}) == {"k": "a\ufffdb"}


def test_normalised_json_round_trips_datetimes_as_text() -> None:
    assert normalise_json({"when": datetime(2026, 1, 1, tzinfo=UTC)}) == {"when": "2026-01-01T00:00:00Z"}


def test_signatures_depend_on_the_key() -> None:
    one = checkpoint_signature(b"k" * 32, seq=1, head_hash="a" * 64, at="t")
    two = checkpoint_signature(b"j" * 32, seq=1, head_hash="a" * 64, at="t")
    assert one != two and key_id(b"k" * 32) != key_id(b"j" * 32)
