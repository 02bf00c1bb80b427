"""What a run did, letter by letter (issue 15, part 8): the ledger page lists each letter with its
outcome and the re-sent mark, filters by outcome, and exports CSV or JSON lines; errors are masked
for readers without the unmask grant (masks fail closed), an export is audited and is a POST."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.test import Client
from django.utils import timezone

from recovery.models import AttemptState, AuditAction, AuditEvent, BrokerKind
from recovery.permissions import Role
from recovery.replay import run_ledger
from tests.factories import BrokerFactory, DeadLetterFactory, DeadLetterQueueFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(chk_plan, chk_run, chk_item, chk_ledger, chk_target):
    """A run of five rows: published, published after a worker loss (re-sent), failed with an
    error quoting an e-mail address, returned and resolved, on a DLQ that masks e-mail addresses."""
    broker = BrokerFactory(kind=BrokerKind.KAFKA)
    dlq = DeadLetterQueueFactory(broker=broker, mask_emails=True)
    plan = chk_plan()
    run = chk_run(plan, published=3, failed=1, resent=1)
    target = chk_target(broker, "orders")
    now = timezone.now()
    rows = {}
    for name, fields in {
        "published": {"state": AttemptState.PUBLISHED, "published_at": now, "attempts": 1},
        "resent": {"state": AttemptState.PUBLISHED, "published_at": now, "attempts": 2, "resent": True},
        "failed": {"state": AttemptState.FAILED, "attempts": 3, "error": "refused: customer bob@example.com"},
        "returned": {"state": AttemptState.REDEADLETTERED, "published_at": now, "attempts": 1},
        "resolved": {"state": AttemptState.VERIFIED, "published_at": now, "attempts": 1},
    }.items():
        item = chk_item(plan, target, letter=DeadLetterFactory(dlq=dlq))
        rows[name] = chk_ledger(run, item, letter=item.letter, **fields)
    return run, rows


def _client(make_user, *roles) -> Client:
    client = Client()
    client.force_login(make_user(*roles))
    return client


def test_the_ledger_page_lists_each_letter_with_its_outcome_and_filters_to_the_resent(ledger, make_user) -> None:
    run, rows = ledger
    client = _client(make_user, Role.VIEWER)

    html = client.get(f"/runs/{run.pk}/ledger/").content.decode()
    for name, label in [("published", "published"), ("failed", "failed"), ("returned", "returned to a DLQ"),
                        ("resolved", "resolved")]:  # fmt: skip
        row = rows[name]
        assert f'data-letter="{row.letter_id}" data-outcome="{row.state}"' in html
        assert label in html
    assert f'data-letter="{rows["resent"].letter_id}" data-outcome="published" data-resent="1"' in html

    resent = client.get(f"/runs/{run.pk}/ledger/?outcome=resent").content.decode()
    assert resent.count("<tr data-letter=") == 1 and f'data-letter="{rows["resent"].letter_id}"' in resent
    failed = client.get(f"/runs/{run.pk}/ledger/?outcome=failed").content.decode()
    assert failed.count("<tr data-letter=") == 1
    unknown = client.get(f"/runs/{run.pk}/ledger/?outcome=nonsense").content.decode()
    assert unknown.count("<tr data-letter=") == 5, "an unknown filter value filters nothing"


def test_a_ledger_error_is_masked_on_the_page_and_in_both_exports(ledger, make_user) -> None:
    run, _rows = ledger
    client = _client(make_user, Role.VIEWER)

    assert "bob@example.com" not in client.get(f"/runs/{run.pk}/ledger/").content.decode()
    for fmt in ("csv", "jsonl"):
        response = client.post(f"/runs/{run.pk}/ledger/export/", {"format": fmt})
        assert response.status_code == 200
        body = b"".join(response.streaming_content).decode()
        assert "refused: customer" in body and "bob@example.com" not in body


def test_an_export_of_the_resent_rows_is_audited_and_parses(ledger, make_user) -> None:
    run, rows = ledger
    user = make_user(Role.VIEWER)
    client = Client()
    client.force_login(user)

    response = client.post(f"/runs/{run.pk}/ledger/export/", {"format": "csv", "outcome": "resent"})
    records = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    expected = [(str(rows["resent"].letter_id), "True", "2")]
    assert [(r["letter"], r["resent"], r["attempts"]) for r in records] == expected
    assert 'filename="run-' in response["Content-Disposition"]
    event = AuditEvent.objects.get(action=AuditAction.RUN_LEDGER_EXPORTED)
    assert event.actor_id == user.pk and event.object_id == str(run.pk)

    lines = b"".join(client.post(f"/runs/{run.pk}/ledger/export/", {"format": "jsonl"}).streaming_content)
    assert len([json.loads(line) for line in lines.splitlines()]) == 5


def test_an_export_is_refused_by_get_and_for_an_unknown_format(ledger, make_user) -> None:
    run, _rows = ledger
    client = _client(make_user, Role.VIEWER)
    assert client.get(f"/runs/{run.pk}/ledger/export/?format=csv").status_code == 405
    refused = client.post(f"/runs/{run.pk}/ledger/export/", {"format": "xlsx"})
    assert refused.status_code == 302
    assert not AuditEvent.objects.filter(action=AuditAction.RUN_LEDGER_EXPORTED).exists()


def test_an_anonymous_reader_is_sent_to_sign_in(ledger) -> None:
    run, _rows = ledger
    assert Client().get(f"/runs/{run.pk}/ledger/").status_code == 302
    assert Client().post(f"/runs/{run.pk}/ledger/export/", {"format": "csv"}).status_code in (302, 403)


def test_a_csv_cell_that_a_spreadsheet_would_run_is_made_inert() -> None:
    line = run_ledger._csv_line(["=HYPERLINK(1)", "+1", "-1", "@x", "plain", 3])
    assert next(csv.reader([line])) == ["'=HYPERLINK(1)", "'+1", "'-1", "'@x", "plain", "3"]
