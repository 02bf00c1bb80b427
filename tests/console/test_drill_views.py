"""The drill screens: every page renders for a viewer without action controls; the definition
form refuses bad input with the validation's own message on the field and saves nothing; four
eyes holds on the page and on a direct POST; mutations are POST-only, CSRF-protected and refused
(403) without the role; the overview lists failing drills."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recovery.drills.selectors import drill_approval_current
from recovery.drills.services import drill_approve, drill_create
from recovery.models import (
    Broker,
    BrokerKind,
    Drill,
    DrillApproval,
    DrillOutcome,
    DrillRun,
    DrillStep,
    DrillTrigger,
    JobState,
)
from recovery.models.drills import OUTCOME_STATE
from recovery.permissions import Role
from tests.factories import BrokerFactory, DrillRunFactory, ReplayRunFactory

pytestmark = pytest.mark.django_db

STEPS = [step.value for step in DrillStep]
REASON = "2 transient messages not recovered"


@pytest.fixture
def broker() -> Broker:
    return BrokerFactory(kind=BrokerKind.RABBITMQ)


@pytest.fixture
def author(make_user: Any) -> Any:
    """An operator who also holds the approver role: four eyes must still stop them."""
    return make_user(Role.OPERATOR, Role.APPROVER, username="olga")


@pytest.fixture
def drill(author: Any, broker: Broker) -> Drill:
    return drill_create(actor=author, data={"name": "nightly", "broker": broker, "schedule": "*/30 * * * *"})


@pytest.fixture
def approved(drill: Drill, make_user: Any) -> Drill:
    drill_approve(actor=make_user(Role.APPROVER, username="abe"), drill=drill, comment="looks right")
    return drill


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_data(broker: Broker, **overrides: Any) -> dict[str, Any]:
    data = {
        "name": "billing", "broker": broker.pk, "work_queue": "", "dead_letter_queue": "", "message_count": 6,
        "transient_count": 2, "poison_count": 1, "consumer_recovers": "on", "schedule": "0 * * * *", "enabled": "on",
        "max_capture_seconds": 60, "max_recover_seconds": 120, "timeout_seconds": 300, "rate_per_second": 50,
        "batch_size": 10, "workers": 1, "verifications": "[]", "stop_conditions": "[]", "alert_webhook_url": "",
    }  # fmt: skip
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def finished_run(
    drill: Drill, outcome: str, *, failed_step: str = "", recover: float | None = None, ago: int = 0
) -> DrillRun:
    """A finished run as the runner records it: every step up to the failing one, with timings."""
    started = timezone.now() - timedelta(minutes=ago + 5)
    reached = STEPS if not failed_step else [*STEPS[: STEPS.index(failed_step) + 1], DrillStep.CLEANED_UP.value]
    steps = [
        {"step": name, "started_at": (started + timedelta(seconds=2 * i)).isoformat(), "seconds": 1.5,
         "ok": name != failed_step, "detail": {"reason": REASON} if name == failed_step else {}}
        for i, name in enumerate(reached)
    ]  # fmt: skip
    expectations = [
        {"name": "lost", "step": "verified", "expected": 0, "actual": 0, "ok": True},
        {"name": "recovered", "step": "verified", "expected": 2, "actual": 2 if not failed_step else 0,
         "ok": not failed_step},
    ]  # fmt: skip
    run = DrillRunFactory(
        drill=drill, trigger=DrillTrigger.SCHEDULE, slot=started, outcome=outcome,
        state=OUTCOME_STATE[DrillOutcome(outcome)], failed_step=failed_step,
        reason=f"recovered: {REASON}" if failed_step else "", started_at=started,
        finished_at=started + timedelta(seconds=20), steps=steps, expectations=expectations, injected=6,
        dead_lettered=3, captured=3, replayed=2, recovered=0 if failed_step else 2, lost=0, duplicates=0,
        unexplained_duplicates=0, time_to_capture_seconds=1.2, time_to_recover_seconds=recover,
    )  # fmt: skip
    Drill.objects.filter(pk=drill.pk).update(last_run_at=run.finished_at, last_outcome=outcome)
    return run


# -- pages ---------------------------------------------------------------------------------------


def test_each_page_renders_for_a_viewer_without_action_controls(client_for: Any, approved: Drill) -> None:
    passed = finished_run(approved, DrillOutcome.PASSED, recover=8.0, ago=60)
    failed = finished_run(approved, DrillOutcome.FAILED, failed_step=DrillStep.VERIFIED, ago=1)
    viewer = client_for(Role.VIEWER)

    listing = viewer.get(reverse("drills"))
    assert listing.status_code == 200
    row = listing.content.decode()
    assert "nightly" in row and "*/30 * * * *" in row and "50%" in row
    assert 'data-testid="last-outcome" data-state="failed"' in row
    assert 'data-testid="drill-new"' not in row

    page = viewer.get(reverse("drill-detail", args=[approved.pk])).content.decode()
    assert 'data-approved="true"' in page and "by abe" in page
    assert f'data-run="{passed.pk}" data-state="passed"' in page
    assert f'data-run="{failed.pk}" data-state="failed"' in page
    assert 'data-testid="ttr-chart"' in page and 'data-testid="pass-rate-chart"' in page
    for control in ("drill-actions", "drill-approve", "drill-run-now", "drill-edit"):
        assert f'data-testid="{control}"' not in page

    run_page = viewer.get(reverse("drill-run-detail", args=[failed.pk])).content.decode()
    assert 'data-testid="failed-step" data-step="verified"' in run_page
    assert "step <strong>Verified</strong>" in run_page

    assert viewer.get(reverse("drill-new")).status_code == 403
    assert viewer.get(reverse("drill-edit", args=[approved.pk])).status_code == 403


def test_the_run_page_shows_each_step_with_its_timing_and_each_expectation(client_for: Any, drill: Drill) -> None:
    run = finished_run(drill, DrillOutcome.FAILED, failed_step=DrillStep.VERIFIED)
    page = client_for(Role.VIEWER).get(reverse("drill-run-detail", args=[run.pk])).content.decode()
    for name in ("injected", "dead_lettered", "captured", "classified", "replayed"):
        assert f'data-step="{name}" data-status="ok"' in page
    assert 'data-step="verified" data-status="failed"' in page
    assert "+2.00 s" in page and "1.50 s" in page  # when the step started, how long it took
    assert "2 transient messages not recovered" in page
    assert 'data-expectation="lost" data-ok="true"' in page and 'data-expectation="recovered" data-ok="false"' in page
    assert 'data-testid="steps-chart"' in page
    assert "hx-get" not in page  # a finished run does not poll


def test_an_active_run_polls_for_its_live_part(client_for: Any, approved: Drill) -> None:
    run = DrillRunFactory(
        drill=approved, state=JobState.RUNNING, step=DrillStep.CAPTURED,
        started_at=timezone.now(), steps=[{"step": "provisioned", "started_at": timezone.now().isoformat(),
                                           "seconds": 0.4, "ok": True, "detail": {}}],
    )  # fmt: skip
    client = client_for(Role.VIEWER)
    page = client.get(reverse("drill-run-detail", args=[run.pk])).content.decode()
    assert f'hx-get="{reverse("drill-run-detail", args=[run.pk])}"' in page
    partial = client.get(reverse("drill-run-detail", args=[run.pk]), headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<div id="drill-run-live"') and "<html" not in partial
    assert 'data-step="captured" data-status="running"' in partial
    assert 'data-step="verified" data-status="not reached"' in partial
    assert 'data-state="running"' in partial and ">Running</span>" in partial


def test_a_run_in_its_replay_phase_shows_as_replaying(client_for: Any, approved: Drill, author: Any) -> None:
    replay = ReplayRunFactory(plan__author=author, plan__state="running")
    run = DrillRunFactory(
        drill=approved, state=JobState.QUEUED, step=DrillStep.REPLAYED, replay_run=replay, started_at=timezone.now()
    )
    client = client_for(Role.VIEWER)
    partial = client.get(reverse("drill-run-detail", args=[run.pk]), headers={"HX-Request": "true"}).content.decode()
    assert 'data-state="replaying"' in partial and ">Replaying</span>" in partial and "hx-get" in partial
    page = client.get(reverse("drill-detail", args=[approved.pk])).content.decode()
    assert f'data-run="{run.pk}" data-state="replaying"' in page and "is replaying." in page
    assert 'data-state="replaying"' in client.get(reverse("drills")).content.decode()


def test_the_overview_lists_failing_drills_only_when_there_are_some(client_for: Any, approved: Drill) -> None:
    client = client_for(Role.VIEWER)
    finished_run(approved, DrillOutcome.PASSED, recover=5.0)
    assert 'data-testid="failing-drills"' not in client.get(reverse("overview")).content.decode()
    run = finished_run(approved, DrillOutcome.FAILED, failed_step=DrillStep.REPLAYED)
    page = client.get(reverse("overview")).content.decode()
    assert 'data-testid="failing-drills"' in page and f"run {run.pk}" in page and "<strong>Replayed</strong>" in page


# -- the definition form -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"schedule": "61 * * * *"}, "schedule", "is not a valid cron expression"),
        ({"schedule": "every hour"}, "schedule", "is not a valid cron expression"),
        ({"message_count": 0}, "message_count", "at least one message to inject"),
        ({"work_queue": "orders"}, "work_queue", "'orders' is not a drill queue"),
        ({"transient_count": 5, "poison_count": 3}, "transient_count", "exceed the 6 messages"),
        ({"max_recover_seconds": 900}, "max_recover_seconds", "can never be met"),
        ({"alert_webhook_url": "ftp://x"}, "alert_webhook_url", "an http(s) URL"),
    ],
)
def test_the_form_refuses_bad_input_with_the_specific_error_and_saves_nothing(
    make_user: Any, broker: Broker, overrides: dict[str, Any], field: str, message: str
) -> None:
    client = login(make_user(Role.OPERATOR))
    response = client.post(reverse("drill-new"), form_data(broker, **overrides))
    assert response.status_code == 400
    assert message in response.context["form"].errors[field][0]
    assert f'data-testid="error-{field}"' in response.content.decode()
    assert not Drill.objects.exists()


def test_only_an_admin_is_offered_the_non_drill_queue_choice(make_user: Any, broker: Broker) -> None:
    operator_form = login(make_user(Role.OPERATOR)).get(reverse("drill-new")).content.decode()
    admin_form = login(make_user(Role.OPERATOR, Role.ADMIN)).get(reverse("drill-new")).content.decode()
    assert 'name="allow_non_drill_queue"' not in operator_form
    assert 'name="allow_non_drill_queue"' in admin_form
    # posting the choice anyway is no choice at all for an operator
    response = login(make_user(Role.OPERATOR)).post(
        reverse("drill-new"),
        form_data(broker, work_queue="orders", allow_non_drill_queue="on", non_drill_queue_reason="because I can"),
    )
    assert response.status_code == 400 and "only an admin may point a drill" in response.content.decode()
    assert not Drill.objects.exists()


def test_an_admin_points_a_drill_at_another_queue_only_explicitly_with_a_reason(make_user: Any, broker: Broker) -> None:
    client = login(make_user(Role.OPERATOR, Role.ADMIN, username="ada"))
    outside = {"work_queue": "orders", "dead_letter_queue": "orders-dlq"}
    response = client.post(reverse("drill-new"), form_data(broker, **outside))
    assert "are not drill queues" in response.context["form"].errors["work_queue"][0]
    response = client.post(reverse("drill-new"), form_data(broker, allow_non_drill_queue="on", **outside))
    assert "say why the drill may use" in response.context["form"].errors["non_drill_queue_reason"][0]
    assert not Drill.objects.exists()

    reason = "the orders pair is the only one wired to the real consumer"
    response = client.post(
        reverse("drill-new"), form_data(broker, allow_non_drill_queue="on", non_drill_queue_reason=reason, **outside)
    )
    drill = Drill.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("drill-detail", args=[drill.pk])
    page = client.get(response["Location"]).content.decode()
    assert "Not a drill queue: chosen explicitly by ada" in page and reason in page


def test_an_operator_defines_a_drill_on_the_default_drill_queues(make_user: Any, broker: Broker) -> None:
    client = login(make_user(Role.OPERATOR, username="olga"))
    response = client.post(reverse("drill-new"), form_data(broker), follow=True)
    drill = Drill.objects.get()
    assert (drill.name, drill.author.username, drill.work_queue, drill.dead_letter_queue) == (
        "billing", "olga", "drill-billing-work", "drill-billing-dlq"
    )  # fmt: skip
    page = response.content.decode()
    assert "Drill billing defined" in page and 'data-approved="false"' in page
    assert 'data-testid="run-now-blocked"' in page and 'data-testid="drill-run-now"' not in page


def test_a_refused_edit_changes_nothing_and_keeps_the_approval(author: Any, approved: Drill) -> None:
    before = Drill.objects.get(pk=approved.pk)
    response = login(author).post(
        reverse("drill-edit", args=[approved.pk]), form_data(approved.broker, name="nightly", schedule="* * *")
    )
    assert response.status_code == 400
    assert "is not a valid cron expression" in response.context["form"].errors["schedule"][0]
    after = Drill.objects.get(pk=approved.pk)
    assert (after.schedule, after.content_hash) == (before.schedule, before.content_hash)
    assert drill_approval_current(after) is not None


def test_a_change_voids_the_approval_and_the_page_says_so(author: Any, approved: Drill) -> None:
    client = login(author)
    edit = client.get(reverse("drill-edit", args=[approved.pk])).content.decode()
    assert 'value="*/30 * * * *"' in edit and 'data-testid="voids-note"' in edit
    response = client.post(
        reverse("drill-edit", args=[approved.pk]), form_data(approved.broker, name="nightly", message_count=8),
        follow=True,
    )  # fmt: skip
    page = response.content.decode()
    assert "Drill nightly saved." in page
    assert 'data-approved="false"' in page and "its approval was voided by a change" in page
    assert Drill.objects.get(pk=approved.pk).message_count == 8
    assert drill_approval_current(Drill.objects.get(pk=approved.pk)) is None


# -- approval and run now ------------------------------------------------------------------------


def test_the_author_cannot_approve_on_the_page_nor_by_a_direct_post(author: Any, drill: Drill) -> None:
    client = login(author)
    page = client.get(reverse("drill-detail", args=[drill.pk])).content.decode()
    assert 'data-testid="drill-approve"' not in page
    assert "The author of a drill cannot approve it (four eyes)" in page
    assert client.post(reverse("drill-approve", args=[drill.pk]), {"comment": "mine"}).status_code == 403
    assert not DrillApproval.objects.exists()


def test_whoever_changed_the_drill_cannot_approve_it(make_user: Any, drill: Drill) -> None:
    editor = login(make_user(Role.OPERATOR, Role.APPROVER))
    editor.post(reverse("drill-edit", args=[drill.pk]), form_data(drill.broker, name="nightly", poison_count=2))
    assert Drill.objects.get(pk=drill.pk).poison_count == 2
    page = editor.get(reverse("drill-detail", args=[drill.pk])).content.decode()
    assert 'data-testid="drill-approve"' not in page and "You changed this drill" in page
    assert editor.post(reverse("drill-approve", args=[drill.pk])).status_code == 403
    assert not DrillApproval.objects.exists()


def test_an_approver_approves_and_the_page_says_so(make_user: Any, drill: Drill) -> None:
    client = login(make_user(Role.APPROVER, username="abe"))
    page = client.get(reverse("drill-detail", args=[drill.pk])).content.decode()
    assert 'data-testid="drill-approve"' in page and 'data-testid="drill-run-now"' not in page
    response = client.post(reverse("drill-approve", args=[drill.pk]), {"comment": "template checked"}, follow=True)
    page = response.content.decode()
    assert "Drill approved" in page and 'data-approved="true"' in page and "template checked" in page
    assert "You have already approved this version of the drill." in page and 'data-testid="drill-approve"' not in page
    assert client.post(reverse("drill-approve", args=[drill.pk]), follow=True).status_code == 200
    assert DrillApproval.objects.filter(drill=drill).count() == 1


def test_run_now_refuses_an_unapproved_drill_with_the_reason(author: Any, drill: Drill) -> None:
    response = login(author).post(reverse("drill-run-now", args=[drill.pk]), follow=True)
    assert "cannot run: it has not been approved" in response.content.decode()
    assert not DrillRun.objects.exists()


def test_run_now_starts_a_run_and_opens_its_page(author: Any, approved: Drill, test_redis: Any) -> None:
    response = login(author).post(reverse("drill-run-now", args=[approved.pk]))
    run = DrillRun.objects.get()
    assert (run.trigger, run.state, run.requested_by) == (DrillTrigger.MANUAL, JobState.QUEUED, author)
    assert response["Location"] == reverse("drill-run-detail", args=[run.pk])
    page = login(author).get(reverse("drill-detail", args=[approved.pk])).content.decode()
    assert 'data-testid="active-run"' in page and 'data-testid="drill-run-now"' not in page


# -- access --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"), [("drill-run-now", {}), ("drill-approve", {"comment": "x"}), ("drill-edit", None)]
)
def test_a_viewers_post_is_refused_and_changes_nothing(
    client_for: Any, approved: Drill, name: str, data: dict[str, Any] | None
) -> None:
    before = Drill.objects.get(pk=approved.pk)
    payload = data if data is not None else form_data(approved.broker, name="nightly", message_count=9)
    response = client_for(Role.VIEWER).post(reverse(name, args=[approved.pk]), payload)
    assert response.status_code == 403
    after = Drill.objects.get(pk=approved.pk)
    assert (after.message_count, after.content_hash) == (before.message_count, before.content_hash)
    assert not DrillRun.objects.exists() and DrillApproval.objects.count() == 1


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.ADMIN])
def test_approving_needs_the_approver_role(client_for: Any, drill: Drill, role: Role) -> None:
    assert client_for(role).post(reverse("drill-approve", args=[drill.pk])).status_code == 403
    assert not DrillApproval.objects.exists()


def test_defining_a_drill_needs_the_operator_role(client_for: Any, broker: Broker) -> None:
    for role in (Role.VIEWER, Role.APPROVER, Role.ADMIN):
        assert client_for(role).post(reverse("drill-new"), form_data(broker)).status_code == 403
    assert not Drill.objects.exists()


@pytest.mark.parametrize("name", ["drill-run-now", "drill-approve"])
def test_mutating_urls_reject_get(client_for: Any, drill: Drill, name: str) -> None:
    assert client_for(Role.OPERATOR, Role.APPROVER).get(reverse(name, args=[drill.pk])).status_code == 405


def test_mutations_require_a_csrf_token(make_user: Any, drill: Drill) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user(Role.APPROVER))
    assert client.post(reverse("drill-approve", args=[drill.pk])).status_code == 403
    assert not DrillApproval.objects.exists()


@pytest.mark.parametrize(
    "name", ["drills", "drill-new", "drill-detail", "drill-edit", "drill-approve", "drill-run-now", "drill-run-detail"]
)
def test_anonymous_users_are_redirected_to_login(approved: Drill, name: str) -> None:
    run = finished_run(approved, DrillOutcome.PASSED, recover=3.0)
    args = [] if name in ("drills", "drill-new") else [run.pk if name == "drill-run-detail" else approved.pk]
    for method in ("get", "post"):
        response = getattr(Client(), method)(reverse(name, args=args))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_unknown_drills_and_runs_are_404(client_for: Any) -> None:
    client = client_for(Role.VIEWER)
    assert client.get(reverse("drill-detail", args=[999999])).status_code == 404
    assert client.get(reverse("drill-run-detail", args=[999999])).status_code == 404
