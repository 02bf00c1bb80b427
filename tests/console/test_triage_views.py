"""Triage screens over HTTP: each role sees what it may, mutating endpoints are POST with CSRF
and refused server-side to roles without the capability, and bad filter input is shown, not
crashed on."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from recovery.models import (
    DeadLetter,
    DeadLetterState,
    ReplayPlan,
    Runbook,
)
from recovery.permissions import Role
from tests.factories import DeadLetterFactory, FingerprintGroupFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def letters(dlq) -> list[DeadLetter]:
    out = DeadLetterFactory.create_batch(3, dlq=dlq, timed_out=True, fingerprint="ab" * 32)
    FingerprintGroupFactory(
        fingerprint="ab" * 32, error_class="TimeoutError", message_pattern="timed out after <n> ms", letter_count=3,
        first_seen=out[0].captured_at, last_seen=out[-1].captured_at, dlq_ids=[dlq.pk], sample=out[0],
    )  # fmt: skip
    return out


def test_viewers_see_letters_without_action_controls(client_for, letters) -> None:
    html = client_for(Role.VIEWER).get(reverse("dead-letters")).content.decode()
    assert all(f'data-letter="{letter.pk}"' in html for letter in letters)
    assert 'data-testid="bulk-actions"' not in html and 'name="id"' not in html


def test_operators_get_checkboxes_and_actions(client_for, letters) -> None:
    html = client_for(Role.OPERATOR).get(reverse("dead-letters")).content.decode()
    assert 'data-testid="bulk-actions"' in html and html.count('name="id"') == 3


def test_bad_filter_input_is_shown_as_an_error(client_for, letters) -> None:
    response = client_for(Role.VIEWER).get(reverse("dead-letters"), {"category": "<script>x</script>"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="filter-error"' in html and "<script>x</script>" not in html


def test_load_more_returns_the_next_rows_only(client_for, letters) -> None:
    client = client_for(Role.VIEWER)
    first = client.get(reverse("dead-letters"), {"sort": "newest"})
    page = first.context["page"]
    assert page.next_cursor is None  # 3 letters fit one page
    html = first.content.decode()
    assert html.index(f'data-letter="{letters[2].pk}"') < html.index(f'data-letter="{letters[0].pk}"')


def test_the_total_partial_is_exact_for_small_sets(client_for, letters) -> None:
    assert "3 letters" in client_for(Role.VIEWER).get(reverse("letters-total")).content.decode()


@pytest.mark.parametrize("url_name", ["letters-bulk", "plan-from-selection"])
def test_mutations_are_post_only(client_for, letters, url_name) -> None:
    assert client_for(Role.OPERATOR).get(reverse(url_name)).status_code == 405


@pytest.mark.parametrize("role", [Role.VIEWER, Role.APPROVER, Role.ADMIN])
def test_a_direct_post_without_the_capability_is_refused(client_for, letters, role) -> None:
    client = client_for(role)
    response = client.post(reverse("letters-bulk"), {"id": [letters[0].pk], "action": "discard", "reason": "no!!!"})
    assert response.status_code == 403
    assert client.post(reverse("plan-from-selection"), {"id": [letters[0].pk], "name": "p"}).status_code == 403
    letters[0].refresh_from_db()
    assert letters[0].state == DeadLetterState.CAPTURED and not ReplayPlan.objects.exists()


def test_posts_need_the_csrf_token(make_user, letters) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(Role.OPERATOR))
    assert client.post(reverse("letters-bulk"), {"id": [letters[0].pk], "action": "hold"}).status_code == 403


def test_an_operator_discards_picked_letters_and_plans_from_a_filter(client_for, letters) -> None:
    client = client_for(Role.OPERATOR)
    response = client.post(
        reverse("letters-bulk"),
        {
            "scope": "picked",
            "id": [letters[0].pk],
            "action": "discard",
            "reason": "load-test data",
            "back": "/letters/",
        },
    )
    assert response.status_code == 302
    letters[0].refresh_from_db()
    assert letters[0].state == DeadLetterState.DISCARDED
    response = client.post(reverse("plan-from-selection"), {"scope": "filter", "q": "timeout", "name": "retry"})
    plan = ReplayPlan.objects.get()
    assert response["Location"] == reverse("plan-detail", args=[plan.pk])
    html = client.get(response["Location"]).content.decode()
    assert "retry" in html and "text &#x27;timeout&#x27;" in html


def test_a_whole_filter_bulk_action_shows_its_progress_page(client_for, letters) -> None:
    client = client_for(Role.OPERATOR)
    response = client.post(reverse("letters-bulk"), {"scope": "filter", "category": "unknown", "action": "hold"})
    assert response.status_code == 302 and "/letters/jobs/" in response["Location"]
    html = client.get(response["Location"]).content.decode()
    assert 'data-testid="job-progress"' in html and 'data-state="queued"' in html


def test_groups_and_group_detail_with_a_runbook(client_for, letters, make_user) -> None:
    viewer = client_for(Role.VIEWER)
    html = viewer.get(reverse("groups")).content.decode()
    assert f'data-fingerprint="{"ab" * 32}"' in html and "<polyline" in html
    runbook = Runbook.objects.create(
        title="Timeouts", body="<script>x()</script> **replay** after [the fix](https://x.example)"
    )
    operator = client_for(Role.OPERATOR)
    assert viewer.post(reverse("group-runbook", args=["ab" * 32]), {"runbook": runbook.pk}).status_code == 403
    assert operator.post(reverse("group-runbook", args=["ab" * 32]), {"runbook": runbook.pk}).status_code == 302
    html = viewer.get(reverse("group-detail", args=["ab" * 32])).content.decode()
    assert "<strong>replay</strong>" in html and '<a href="https://x.example"' in html
    assert "<script>x()</script>" not in html and "&lt;script&gt;" in html


def test_unknown_group_is_404(client_for) -> None:
    assert client_for(Role.VIEWER).get(reverse("group-detail", args=["ff" * 32])).status_code == 404


def test_runbook_editing_is_for_operators(client_for) -> None:
    assert client_for(Role.VIEWER).post(reverse("runbook-new"), {"title": "x"}).status_code == 403
    response = client_for(Role.OPERATOR).post(reverse("runbook-new"), {"title": "x", "links": "docs | ftp://nope"})
    assert "not an http(s) URL" in response.content.decode()
    response = client_for(Role.OPERATOR).post(
        reverse("runbook-new"), {"title": "Payments", "links": "Dashboard | https://grafana.example/d/1"}
    )
    assert response.status_code == 302 and Runbook.objects.get().links[0]["title"] == "Dashboard"


def test_overview_shows_counts_by_category_and_the_arrivals_chart(client_for, letters) -> None:
    html = client_for(Role.VIEWER).get(reverse("overview")).content.decode()
    assert 'data-category="unknown" data-n="3"' in html and 'data-testid="arrivals-chart"' in html
