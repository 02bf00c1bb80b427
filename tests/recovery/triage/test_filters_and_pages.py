"""The letters filter and the list selectors: what the operator filters is exactly what an
action touches; keyset pages never skip or repeat a letter; totals stay cheap on large sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.http import QueryDict

from recovery.errors import InvalidInput
from recovery.models import Category, DeadLetter, Disposition
from recovery.triage import selectors
from recovery.triage.filters import LetterFilter

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("category=nope", "category: unknown value 'nope'"),
        ("dlq=abc", "dlq: expected whole numbers"),
        ("since=yesterday", "since: expected a date and time"),
        ("fingerprint=zz", "fingerprint: expected a hexadecimal"),
        ("expiring=-3", "expiring: out of range"),
    ],
)
def test_bad_filter_input_is_refused_with_the_field_named(query: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        LetterFilter.from_params(QueryDict(query))


def test_a_filter_round_trips_through_params_and_json(dlq) -> None:
    original = LetterFilter.from_params(
        QueryDict(f"dlq={dlq.pk}&category=transient&category=poison&since=2026-11-01T10:00&q=Timeout&expiring=24")
    )
    assert LetterFilter.from_params(QueryDict("&".join(f"{k}={v}" for k, v in original.as_params()))) == original
    assert LetterFilter.from_json(original.as_json()) == original


def test_each_filter_field_narrows_the_letters(dlq, make_letter) -> None:
    poison = make_letter(category=Category.POISON, disposition=Disposition.HOLD, origin="orders", fingerprint="ab" * 32)
    transient = make_letter(category=Category.TRANSIENT, disposition=Disposition.REPLAY, age_minutes=120)
    expiring = make_letter(expires_at=datetime.now(UTC) + timedelta(hours=2), search_text="connection refused by db")

    def ids(**params) -> set[int]:
        return set(LetterFilter.from_params(params).apply().values_list("id", flat=True))

    assert ids(category="poison") == {poison.pk}
    assert ids(disposition="replay") == {transient.pk}
    assert ids(fingerprint="ab" * 32) == {poison.pk}
    assert ids(origin="orders") == {poison.pk}
    assert ids(expiring="24") == {expiring.pk}
    assert ids(q="REFUSED") == {expiring.pk}  # case-insensitive text search
    assert ids(since=(datetime.now(UTC) - timedelta(minutes=60)).isoformat()) == {poison.pk, expiring.pk}


def test_a_frozen_selection_ignores_letters_captured_later(make_letter) -> None:
    first = make_letter()
    frozen = LetterFilter().frozen()
    make_letter()
    assert list(frozen.apply().values_list("id", flat=True)) == [first.pk]


@pytest.mark.parametrize("sort", ["newest", "oldest", "age", "expiry"])
def test_keyset_pages_cover_every_letter_once_in_order(make_letter, sort: str) -> None:
    now = datetime.now(UTC)
    for i in range(23):
        make_letter(
            age_minutes=i % 5,  # ties on the sort column: the id breaks them
            first_failed_at=None if i % 4 == 0 else now - timedelta(minutes=i),  # NULLs sort last
            expires_at=None if i % 3 == 0 else now + timedelta(hours=i % 7),
        )
    seen, cursor = [], ""
    while True:
        page = selectors.letters_page(LetterFilter(), sort=sort, cursor=cursor, limit=5)
        seen.extend(letter.pk for letter in page.letters)
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    column, descending, _ = selectors.SORTS[sort]
    expected = sorted(
        DeadLetter.objects.all(),
        key=lambda letter: _order_key(letter, column, descending),
    )
    assert seen == [letter.pk for letter in expected]


def _order_key(letter: DeadLetter, column: str, descending: bool) -> tuple:
    """ORDER BY column [DESC] NULLS LAST, id [DESC], in Python."""
    value = getattr(letter, column)
    stamp = value.timestamp() if value else 0
    return (value is None, -stamp if descending else stamp, -letter.pk if descending else letter.pk)


def test_a_forged_cursor_is_refused() -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        selectors.letters_page(LetterFilter(), cursor="not-a-cursor!!")


def test_totals_are_exact_when_small_and_estimated_beyond_the_limit(make_letter, monkeypatch) -> None:
    for _ in range(6):
        make_letter()
    assert selectors.estimated_total(LetterFilter()) == selectors.Total(6, True)
    monkeypatch.setattr(selectors, "EXACT_COUNT_LIMIT", 3)
    total = selectors.estimated_total(LetterFilter())
    assert not total.exact and total.value >= 4
