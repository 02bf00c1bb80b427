"""Invariant 10 in headless Chromium: hostile letters (script and onerror payloads in bodies and
headers, non-UTF-8 bytes, a 10 MiB body, 10,000-deep JSON) render safely on the letter page and
in the lists: no script runs, no page error, the page comes back quickly, the download works."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Page, expect

from recovery.masking import MASK
from recovery.models import DeadLetter, DeadLetterQueue, Runbook
from recovery.permissions import Role
from tests.browser.helpers import sign_in
from tests.factories import PASSWORD, DeadLetterFactory, DeadLetterQueueFactory, FingerprintGroupFactory

# xdist_group: one pytest worker runs them all, with one Chromium
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser"), pytest.mark.django_db(transaction=True)]

PAYLOADS = [
    "<script>window.__pwned=1</script>",
    "<img src=x onerror=window.__pwned=2>",
    '"><svg onload=window.__pwned=3>',
    "</pre></td></table><script>window.__pwned=4</script>",
    "javascript:window.__pwned=5",
]
HOSTILE = " ".join(PAYLOADS)
MIB = 1024 * 1024


def _letters(dlq: DeadLetterQueue) -> dict[str, tuple[DeadLetter, bytes]]:
    bodies = {
        "json": json.dumps({"note": HOSTILE, HOSTILE: [HOSTILE], "mail": "alice@example.com"}).encode(),
        "text": (HOSTILE + "\n").encode() * 50,
        "non-utf8": b"\xff\xfe\x00\x81" + HOSTILE.encode() + b"\xc3\x28\xa0\xa1 alice@example.com",
        "10-mib": (HOSTILE.encode() + b"\n") * (10 * MIB // (len(HOSTILE) + 1) + 1),
        "deep-json": ("[" * 10_000 + json.dumps(HOSTILE) + "]" * 10_000).encode(),
    }
    runbook = Runbook.objects.create(title=HOSTILE, owner=HOSTILE, body=f"{HOSTILE}\n\n[x]({PAYLOADS[4]})")
    now = datetime.now(UTC)
    FingerprintGroupFactory(fingerprint="e" * 64, first_seen=now, runbook=runbook)
    letters = {}
    for name, body in bodies.items():
        letter = DeadLetterFactory(
            dlq=dlq, body=body, captured_at=now, content_type=HOSTILE,
            headers={"x-evil": HOSTILE, HOSTILE: {"nested": [HOSTILE]}, "x-bytes": {"$base64": "//48c2NyaXB0Pg=="}},
            properties={HOSTILE: HOSTILE}, origin=HOSTILE, reason=HOSTILE, error_class=HOSTILE,
            error_message=HOSTILE, stack_trace=HOSTILE * 20, failure_extras={HOSTILE: HOSTILE},
            source_message_id=HOSTILE, fingerprint="e" * 64, discard_reason=HOSTILE,
        )  # fmt: skip
        letters[name] = (letter, body)
    return letters


def _assert_inert(page: Page) -> None:
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img, main svg, main iframe").count() == 0


def _open(page: Page, url: str) -> float:
    started = time.monotonic()
    response = page.goto(url)
    elapsed = time.monotonic() - started
    assert response is not None and response.status == 200, url
    return elapsed


@pytest.mark.slow
def test_hostile_letters_render_inert_and_download(page: Page, live_server, make_user, tmp_path) -> None:
    dlq = DeadLetterQueueFactory()
    letters = _letters(dlq)
    make_user(Role.OPERATOR, username="olivia")
    sign_in(page, live_server.url, "olivia", PASSWORD)
    expect(page.get_by_test_id("username")).to_have_text("olivia")

    for name, (letter, body) in letters.items():
        elapsed = _open(page, f"{live_server.url}/letters/{letter.pk}/")
        assert elapsed < 5, f"{name}: the letter page took {elapsed:.1f}s"
        _assert_inert(page)
        expect(page.get_by_test_id("error-message")).to_contain_text(PAYLOADS[0])  # shown as text
        expect(page.get_by_test_id("body-text")).to_be_visible()
        expect(page.get_by_test_id("runbook")).to_contain_text(PAYLOADS[1])
        shown = page.get_by_test_id("body-text").inner_text()
        assert len(shown) <= 70 * 1024, f"{name}: {len(shown)} characters shown"
        assert "alice@example.com" not in page.content()

        with page.expect_download() as info:
            page.get_by_test_id("download").click()
        download = info.value
        assert download.suggested_filename == f"dead-letter-{letter.pk}.masked.bin"
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        data = path.read_bytes()
        if name == "json":
            assert json.loads(data)["mail"] == MASK
        elif name == "non-utf8":
            assert data.startswith(b"\xff\xfe\x00\x81") and b"alice@example.com" not in data
        else:
            assert data == body, name  # nothing personal in it: the stored bytes, whole
        _assert_inert(page)

    for url in (f"{live_server.url}/letters/", f"{live_server.url}/dlqs/{dlq.pk}/"):
        elapsed = _open(page, url)
        assert elapsed < 5, f"{url} took {elapsed:.1f}s"
        expect(page.locator("tr[data-letter]")).to_have_count(len(letters))
        _assert_inert(page)
