"""In headless Chromium: an operator filters the audit trail, downloads an export that verifies
offline, and watches a chain verification finish without reloading the page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from recovery.audit.export import verify_export_file
from recovery.permissions import Role
from tests.browser.helpers import sign_in
from tests.factories import PASSWORD
from tests.helpers import run_queued_jobs
from tests.recovery.audit.helpers import record_events

# xdist_group: one pytest worker runs them all, with one Chromium
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser"), pytest.mark.django_db(transaction=True)]


def test_filter_export_and_verify(page: Page, live_server, make_user, tmp_path, settings, test_redis) -> None:
    settings.RECOVERY_JOB_BACKEND = "rq"
    make_user(Role.OPERATOR, username="olivia")
    record_events(3)
    sign_in(page, live_server.url, "olivia", PASSWORD)
    expect(page.get_by_test_id("username")).to_have_text("olivia")
    page.get_by_role("link", name="Audit").click()
    expect(page.locator("tr[data-seq]")).to_have_count(4)  # three events and olivia's sign-in

    page.select_option("select[name=action]", "auth.login")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr[data-seq]")).to_have_count(1)
    expect(page.locator("tr[data-seq]")).to_contain_text("olivia")

    with page.expect_download() as download:
        page.get_by_role("button", name="JSON Lines").click()
    path = tmp_path / "export.jsonl"
    download.value.save_as(path)
    report = verify_export_file(path, settings.AUDIT_HMAC_KEY)
    assert report.ok and report.events == 1 and not report.full_chain, report.message

    page.get_by_role("button", name="Verify chain").click()
    expect(page.locator("[data-state]")).to_have_attribute("data-state", re.compile("queued|running"))
    # An RQ worker runs the queued job (here, in the test's main thread: RQ installs signal
    # handlers); the page keeps polling the status box over HTMX, with no reload.
    run_queued_jobs("bulk")
    expect(page.locator("[data-state]")).to_have_attribute("data-state", "passed", timeout=15_000)
    expect(page.get_by_text("Chain intact")).to_be_visible()
