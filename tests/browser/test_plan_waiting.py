"""In headless Chromium: an approver signs in, sees on the overview (and as a count in the
navigation) the plan that waits for them, opens it, reads its frozen items with their targets and
why others are excluded, filters them and approves; the operator then finds it under "Approved,
ready to start". After a run, the operator filters its ledger to the letters re-sent after a
worker loss."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from recovery.models import Category, Disposition, RunState
from recovery.permissions import Role
from recovery.replay import services
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.factories import DeadLetterFactory, LedgerEntryFactory, ReplayRunFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.django_db(transaction=True),
]


def test_an_approver_finds_the_waiting_plan_reads_its_frozen_items_and_approves_it(people, make_user, dlq) -> None:
    author, approver = make_user(Role.OPERATOR), make_user(Role.APPROVER)
    replayed = DeadLetterFactory.create_batch(3, dlq=dlq, replayable=True, origin="kafka:orders")
    held = DeadLetterFactory(dlq=dlq, category=Category.TRANSIENT, disposition=Disposition.HOLD)
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name="orders after the fix")
    services.plan_submit(actor=author, plan=plan)

    page = people.sign_in(approver.username)
    expect(page.get_by_test_id("nav-count-plans")).to_have_text("1")
    waiting = page.get_by_test_id("awaiting-approval")
    expect(waiting).to_contain_text("orders after the fix")
    expect(waiting).to_contain_text(author.username)
    waiting.get_by_role("link", name="orders after the fix").click()

    items = page.get_by_test_id("item-table")
    for letter in replayed:
        row = items.locator(f'tr[data-letter="{letter.pk}"]')
        expect(row).to_contain_text("included")
        expect(row.locator("code")).to_contain_text("orders")
    expect(items.locator(f'tr[data-letter="{held.pk}"]')).to_contain_text("disposition hold")
    expect(page.get_by_test_id("frozen-breakdown")).to_contain_text("disposition hold")

    page.get_by_test_id("item-filter").get_by_label("Item").select_option("excluded")
    page.get_by_role("button", name="Filter items").click()
    expect(items.locator("tbody tr")).to_have_count(1)
    expect(items.locator(f'tr[data-letter="{held.pk}"]')).to_be_visible()

    page.get_by_test_id("plan-approve").click()
    expect(page.get_by_test_id("approved-by-me")).to_be_visible()
    expect(page.get_by_test_id("nav-count-plans")).to_have_count(0)

    operator = people.sign_in(author.username)
    ready = operator.get_by_test_id("ready-to-start")
    expect(ready).to_contain_text("orders after the fix")
    expect(operator.get_by_test_id("nav-count-plans")).to_have_text("1")


def test_after_a_run_the_operator_filters_its_ledger_to_the_resent_letters(people, make_user, dlq) -> None:
    """The run page links its ledger; the operator narrows it to the letters re-sent after a
    worker loss and sees exactly those, marked re-sent."""
    operator = make_user(Role.OPERATOR)
    run = ReplayRunFactory(state=RunState.COMPLETED_NOT_VERIFIED, published=4, resent=2, finished_at=timezone.now())
    target = {"broker": dlq.broker_id, "name": "orders", "routing_key": "", "vhost": ""}
    resent, once = [], []
    for n in range(4):
        entry = LedgerEntryFactory(
            run=run, item__target=target, item__letter__dlq=dlq, published_at=timezone.now(), attempts=1 + (n < 2),
            resent=n < 2,
        )  # fmt: skip
        (resent if n < 2 else once).append(entry)

    page = people.sign_in(operator.username)
    page.goto(f"{people.base}/runs/{run.pk}/")
    expect(page.get_by_test_id("run-resent")).to_have_text("2")
    page.get_by_role("link", name="the re-sent ones").click()
    table = page.get_by_test_id("ledger-table")
    expect(table.locator("tbody tr")).to_have_count(2)
    for entry in resent:
        expect(table.locator(f'tr[data-letter="{entry.letter_id}"]')).to_contain_text("re-sent")
    for entry in once:
        expect(table.locator(f'tr[data-letter="{entry.letter_id}"]')).to_have_count(0)
    expect(page.get_by_test_id("ledger-filter").get_by_label("Outcome")).to_have_value("resent")
