from __future__ import annotations

from playwright.sync_api import Page


def sign_in(page: Page, base: str, username: str, password: str) -> None:
    """Fill the login form as a person would."""
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
