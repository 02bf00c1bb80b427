"""In headless Chromium: an operator filters letters, opens one and sees its personal data
masked, bulk-classifies a failure group and drafts a replay plan from it; a viewer sees the same
pages without action controls and is refused when posting directly."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page, expect

from recovery.models import (
    Category,
    DeadLetter,
    ReplayPlan,
)
from recovery.permissions import Role
from tests.browser.helpers import sign_in
from tests.factories import PASSWORD, DeadLetterFactory, DeadLetterQueueFactory, FingerprintGroupFactory

# xdist_group: one pytest worker runs them all, with one Chromium
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser"), pytest.mark.django_db(transaction=True)]

EMAIL = "alice.customer@example.com"
CARD = "4111 1111 1111 1111"
TIMEOUTS = "ab" * 32


@pytest.fixture
def store() -> dict[str, list[DeadLetter]]:
    dlq = DeadLetterQueueFactory(name="payments-dlt", address="payments.DLT", mask_headers=["x-customer"])
    now = datetime.now(UTC)

    def letter(n: int, error_class: str, message: str, fingerprint: str) -> DeadLetter:
        return DeadLetterFactory(
            dlq=dlq, body=json.dumps({"payment": n, "email": EMAIL, "card": CARD}).encode(), captured_at=now,
            headers={"x-customer": "Alice Customer"}, error_class=error_class, error_message=message,
            fingerprint=fingerprint,
        )  # fmt: skip

    timeouts = [letter(n, "TimeoutError", f"card service timed out after {n}00 ms", TIMEOUTS) for n in range(3)]
    poison = [letter(n, "JSONDecodeError", "Expecting value: line 1", "cd" * 32) for n in range(3, 5)]
    FingerprintGroupFactory(
        fingerprint=TIMEOUTS, error_class="TimeoutError", message_pattern="card service timed out after <n> ms",
        letter_count=3, first_seen=now, dlq_ids=[dlq.pk], sample=timeouts[0],
    )  # fmt: skip
    return {"timeouts": timeouts, "poison": poison}


def test_an_operator_triages_a_group_and_drafts_a_plan(page: Page, live_server, make_user, store) -> None:
    make_user(Role.OPERATOR, username="olga")
    sign_in(page, live_server.url, "olga", PASSWORD)
    page.get_by_role("link", name="Dead letters").click()
    expect(page.locator("tr[data-letter]")).to_have_count(5)

    page.fill("input[name=q]", "timed out")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-letter]")).to_have_count(3)
    expect(page.get_by_test_id("letters-total")).to_have_text("3 letters")

    first = store["timeouts"][2]
    page.locator(f"tr[data-letter='{first.pk}'] a").first.click()
    expect(page).to_have_url(f"{live_server.url}/letters/{first.pk}/")
    content = page.content()
    assert EMAIL not in content and CARD not in content and "Alice Customer" not in content
    expect(page.locator("body")).to_contain_text("TimeoutError")

    page.get_by_role("link", name="Groups").click()
    page.locator(f"tr[data-fingerprint='{TIMEOUTS}'] td a").first.click()
    page.get_by_test_id("group-count").get_by_role("link").click()
    rows = page.locator("tr[data-letter]")
    expect(rows).to_have_count(3)
    for box in page.locator("input[name=id]").all():
        box.check()
    page.get_by_test_id("bulk-action").select_option("set_category")
    page.get_by_test_id("bulk-value").select_option("transient")
    page.get_by_test_id("bulk-apply").click()
    expect(page.locator(".messages")).to_contain_text("3 letter(s) changed")
    expect(page.locator("tr[data-category='transient']")).to_have_count(3)

    for box in page.locator("input[name=id]").all():
        box.check()
    page.get_by_test_id("plan-name").fill("Replay card timeouts")
    page.get_by_test_id("plan-create").click()
    expect(page.get_by_test_id("plan-selection")).to_contain_text("3 picked letter(s)")
    plan = ReplayPlan.objects.get()
    assert plan.author.username == "olga" and sorted(plan.selection["ids"]) == sorted(
        letter.pk for letter in store["timeouts"]
    )
    assert set(DeadLetter.objects.filter(category=Category.TRANSIENT).values_list("id", flat=True)) == {
        letter.pk for letter in store["timeouts"]
    }


def test_a_viewer_sees_no_actions_and_a_direct_post_is_refused(page: Page, live_server, make_user, store) -> None:
    make_user(Role.VIEWER, username="vera")
    sign_in(page, live_server.url, "vera", PASSWORD)
    page.goto(f"{live_server.url}/letters/")
    expect(page.locator("tr[data-letter]")).to_have_count(5)
    expect(page.get_by_test_id("bulk-actions")).to_have_count(0)
    expect(page.locator("input[name=id]")).to_have_count(0)
    page.goto(f"{live_server.url}/groups/{TIMEOUTS}/")
    expect(page.get_by_role("button", name="Attach")).to_have_count(0)

    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    target = store["poison"][0]
    response = page.request.post(
        f"{live_server.url}/letters/bulk/",
        form={"id": str(target.pk), "action": "discard", "reason": "sneaky viewer"},
        headers={"X-CSRFToken": token, "Referer": f"{live_server.url}/letters/"},
    )
    assert response.status == 403
    target.refresh_from_db()
    assert target.state == "captured"
