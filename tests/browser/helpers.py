from __future__ import annotations

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.factories import PASSWORD


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    """Fill the login form as a person would."""
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


class People:
    """One browser context per person (their own cookies), signed in; all closed at teardown (the
    ``people`` fixture), before the live server's settings are restored, so no page keeps polling a
    stopped server."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.browser, self.base = browser, base
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def sign_in(self, username: str) -> Page:
        context = self.browser.new_context()
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"{username}: {exc}"))
        sign_in(page, self.base, username, PASSWORD)
        expect(page.get_by_test_id("username")).to_have_text(username)
        return page

    def close(self, page: Page) -> None:
        page.context.close()
        self.contexts.remove(page.context)


def post(page: Page, url: str) -> int:
    """A direct POST with the page's session and CSRF token (what a crafted form would send)."""
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    return page.request.post(url, headers={"X-CSRFToken": token, "Referer": url}, max_redirects=0).status
