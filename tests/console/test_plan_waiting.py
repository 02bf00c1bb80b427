"""Who is waiting: the overview lists plans awaiting the signed-in approver (never plans they
shaped: four eyes, invariant 7) and approved plans an operator can start, and the navigation
counts them; a submitted plan's page shows its frozen items, paged and filtered."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from recovery.models import Category, Disposition, PlanApproval
from recovery.permissions import Role
from recovery.replay import plan_items, services
from recovery.replay.waiting import plans_awaiting_approval, plans_ready_to_start, waiting_count
from recovery.triage.filters import LetterFilter
from recovery.triage.services import plan_draft_create
from tests.factories import DeadLetterFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(make_user):
    return {
        "author": make_user(Role.OPERATOR),
        "operator": make_user(Role.OPERATOR),
        "approver": make_user(Role.APPROVER),
        "shaper": make_user(Role.APPROVER, Role.OPERATOR),
        "viewer": make_user(Role.VIEWER),
    }


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _submitted(dlq, author, name="replay orders", **changes):
    plan = plan_draft_create(actor=author, selection=LetterFilter(dlq=(dlq.pk,)), name=name)
    if changes:
        plan = services.plan_update(actor=author, plan=plan, changes=changes)
    return services.plan_submit(actor=author, plan=plan)


def test_an_approver_sees_a_submitted_plan_waiting_and_the_navigation_counts_it(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = _submitted(dlq, people["author"])

    page = _client(people["approver"]).get("/")
    html = page.content.decode()
    assert 'data-testid="awaiting-approval"' in html and f'data-plan="{plan.name}"' in html
    assert 'data-testid="nav-count-plans"' in html
    assert waiting_count(people["approver"]) == 1

    author_page = _client(people["author"]).get("/").content.decode()
    assert 'data-testid="awaiting-approval"' not in author_page, "the author cannot approve: nothing waits for them"
    viewer_page = _client(people["viewer"]).get("/").content.decode()
    assert 'data-testid="awaiting-approval"' not in viewer_page and "nav-count-plans" not in viewer_page


def test_a_plan_is_not_offered_to_an_approver_who_changed_it_or_already_approved_it(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = plan_draft_create(actor=people["author"], selection=LetterFilter(dlq=(dlq.pk,)), name="shaped")
    plan = services.plan_update(actor=people["shaper"], plan=plan, changes={"reason": "orders service fixed"})
    plan = services.plan_submit(actor=people["author"], plan=plan)
    assert plans_awaiting_approval(people["shaper"]) == [], "four eyes: who changed it may not approve it"

    plan = services.plan_update(actor=people["author"], plan=plan, changes={"required_approvals": 2})
    plan = services.plan_submit(actor=people["author"], plan=plan)
    assert [p.pk for p in plans_awaiting_approval(people["approver"])] == [plan.pk]
    services.plan_approve(actor=people["approver"], plan=plan)
    assert plans_awaiting_approval(people["approver"]) == [], "already approved this version"


def test_an_operator_sees_approved_plans_ready_to_start_and_expired_ones_marked(dlq, people) -> None:
    DeadLetterFactory(dlq=dlq, replayable=True)
    plan = _submitted(dlq, people["author"])
    services.plan_approve(actor=people["approver"], plan=plan)

    html = _client(people["operator"]).get("/").content.decode()
    assert 'data-testid="ready-to-start"' in html and f'data-plan="{plan.name}"' in html
    assert waiting_count(people["operator"]) == 1
    assert 'data-testid="ready-to-start"' not in _client(people["approver"]).get("/").content.decode()

    PlanApproval.objects.update(created_at=timezone.now() - timedelta(days=30))
    [ready] = plans_ready_to_start(people["operator"])
    assert ready.expired
    assert "approval expired" in _client(people["operator"]).get("/").content.decode()
    assert waiting_count(people["operator"]) == 0, "an expired plan is not work an operator can do"


def test_a_submitted_plan_shows_its_frozen_items_with_targets_and_exclusion_reasons(dlq, people) -> None:
    included = DeadLetterFactory(dlq=dlq, replayable=True, origin="kafka:orders")
    held = DeadLetterFactory(dlq=dlq, category=Category.TRANSIENT, disposition=Disposition.HOLD, origin="kafka:orders")
    plan = _submitted(dlq, people["author"])

    html = _client(people["approver"]).get(f"/plans/{plan.pk}/").content.decode()
    assert 'data-testid="frozen-breakdown"' in html
    assert f'data-letter="{included.pk}" data-item-state="included"' in html
    assert "<code>" in html and "orders" in html, "the included letter's target is shown"
    assert f'data-letter="{held.pk}" data-item-state="excluded"' in html
    assert "disposition hold" in html

    only_excluded = _client(people["approver"]).get(f"/plans/{plan.pk}/?item_state=excluded").content.decode()
    assert f'data-letter="{held.pk}"' in only_excluded and f'data-letter="{included.pk}"' not in only_excluded


def test_frozen_items_are_paged_and_a_bad_filter_value_is_ignored(dlq, people) -> None:
    DeadLetterFactory.create_batch(plan_items.ITEMS_PER_PAGE + 5, dlq=dlq, replayable=True, origin="kafka:orders")
    plan = _submitted(dlq, people["author"])
    client = _client(people["approver"])

    first = client.get(f"/plans/{plan.pk}/?item_category=nonsense").content.decode()
    assert first.count('data-item-state="included"') == plan_items.ITEMS_PER_PAGE
    assert "page 1 of 2" in first
    second = client.get(f"/plans/{plan.pk}/?items_page=2").content.decode()
    assert second.count('data-item-state="included"') == 5
    breakdown = plan_items.frozen_breakdown(plan)
    assert (breakdown.included, breakdown.excluded) == (plan_items.ITEMS_PER_PAGE + 5, 0)
    assert sum(n for _, n in breakdown.targets) == plan_items.ITEMS_PER_PAGE + 5


def test_frozen_items_show_a_letters_failure_class_masked(people) -> None:
    """Masks fail closed here too: the failure class is a masked field of the letter."""
    from tests.factories import DeadLetterQueueFactory

    masked_dlq = DeadLetterQueueFactory(mask_emails=True)
    DeadLetterFactory(dlq=masked_dlq, replayable=True, error_class="RefusedFor:alice@example.com")
    plan = _submitted(masked_dlq, people["author"])

    html = _client(people["approver"]).get(f"/plans/{plan.pk}/").content.decode()
    assert 'data-item-state="included"' in html
    assert "alice@example.com" not in html and "RefusedFor:" in html


def test_frozen_items_show_the_replay_again_flag_and_the_ordering_group(dlq, people) -> None:
    from recovery.models import PlanItem

    letter = DeadLetterFactory(dlq=dlq, replayable=True)
    plan = _submitted(dlq, people["author"])
    PlanItem.objects.filter(plan=plan, letter=letter).update(
        replay_again=True, ordering_group="sqs-fifo:abc", ordering_position=3
    )
    html = _client(people["approver"]).get(f"/plans/{plan.pk}/").content.decode()
    assert 'data-testid="item-replay-again"' in html
    assert "#3 in group" in html
