"""In a real headless Chromium: each demo role signs in, sees its name and role, and the
navigation and pages its role allows."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from recovery.permissions import Role
from tests.browser.helpers import sign_in

# xdist_group: one pytest worker runs them all, with one Chromium
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser"), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo_credentials(tmp_path) -> dict[str, str]:
    out = io.StringIO()
    call_command("seed_demo", credentials_file=str(tmp_path / "creds"), stdout=out)
    return dict(re.findall(r"^\s+(demo-\w+)\s+(\S+)$", out.getvalue(), re.M))


def test_the_console_sends_anonymous_visitors_to_sign_in(page: Page, live_server) -> None:
    page.goto(f"{live_server.url}/health/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/health/"))


@pytest.mark.parametrize("role", list(Role))
def test_each_demo_role_signs_in_and_sees_its_role(page: Page, live_server, demo_credentials, role: Role) -> None:
    username = f"demo-{role.value}"
    sign_in(page, live_server.url, username, demo_credentials[username])
    expect(page.get_by_test_id("username")).to_have_text(username)
    expect(page.get_by_test_id("roles")).to_have_text(role.label)
    settings_link = page.get_by_role("link", name="Settings")
    if role is Role.ADMIN:
        expect(settings_link).to_be_visible()
    else:
        expect(settings_link).to_have_count(0)
        page.goto(f"{live_server.url}/settings/")
        expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()


def test_overview_loads_service_health_over_htmx(page: Page, live_server, demo_credentials) -> None:
    sign_in(page, live_server.url, "demo-operator", demo_credentials["demo-operator"])
    rows = page.locator("tr[data-service]")
    # The fragment waits for every probe (a broker's ping may take its whole timeout beside the
    # parallel tests): this proves the rows arrive and read healthy, not how fast.
    expect(rows.filter(has_text="PostgreSQL")).to_have_attribute("data-ok", "true", timeout=20_000)
    expect(rows.filter(has_text="local-rabbitmq")).to_have_attribute("data-ok", "true")


def test_a_wrong_password_is_refused(page: Page, live_server, demo_credentials) -> None:
    sign_in(page, live_server.url, "demo-viewer", "not-the-password")
    expect(page.get_by_text("did not match")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/login/"))


def test_sign_out_returns_to_the_login_page(page: Page, live_server, demo_credentials) -> None:
    sign_in(page, live_server.url, "demo-viewer", demo_credentials["demo-viewer"])
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login/"))
    page.goto(f"{live_server.url}/health/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/health/"))
