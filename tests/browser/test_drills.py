"""In headless Chromium, against a real RabbitMQ: an operator defines a recovery drill (first
with an invalid cron expression, which the form refuses on the field), an approver approves it,
the operator runs it now and watches each step arrive without reloading until it passes; a
failing run names its failing step, the drill's history and trend chart show both runs, the
overview lists the failing drill, and a viewer sees it all without controls and is refused when
posting directly.

The passing run goes the real way: Run now enqueues the drill run's job, a background thread
takes it (and the replay's worker jobs) off the real RQ queue (tests.helpers.JobRunner), and the
broker dead-letters, the capture captures, the rules classify and the replay republishes. The
failing run is test data: rows as the runner writes them (tests/recovery/drills covers the
runner failing a drill for real)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from recovery.classification.services import default_rules_install
from recovery.models import DRILL_RUN_ACTIVE, Drill, DrillOutcome, DrillRun, DrillStep, DrillTrigger, JobState
from recovery.permissions import Role
from tests.brokers.fixtures import record_drill_queues
from tests.brokers.harness import RabbitHarness
from tests.browser.helpers import post
from tests.factories import DrillRunFactory
from tests.helpers import JobRunner
from tests.namespace import unique

# xdist_group: one pytest worker runs them all, with one Chromium
pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser"),
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

STEPS = [step.value for step in DrillStep]


@pytest.fixture
def rabbit(rabbit: RabbitHarness) -> Iterator[RabbitHarness]:
    yield rabbit
    record_drill_queues(rabbit)  # the queue pair the drill created


@pytest.fixture
def jobs(settings, test_redis) -> Iterator[JobRunner]:
    settings.RECOVERY_JOB_BACKEND = "rq"
    runner = JobRunner()
    yield runner
    if runner.is_alive():
        runner.stop()
    assert not runner.errors, runner.errors


def _failed_run(drill: Drill) -> DrillRun:
    """A run that failed at verification, written as the runner writes one."""
    started = timezone.now()
    reached = STEPS[: STEPS.index(DrillStep.VERIFIED) + 1] + [DrillStep.CLEANED_UP.value]
    steps = [
        {"step": name, "started_at": (started + timedelta(seconds=i)).isoformat(), "seconds": 0.8,
         "ok": name != DrillStep.VERIFIED, "detail": {"reason": "2 transient not recovered (back in the DLQ)"}
         if name == DrillStep.VERIFIED else {}}
        for i, name in enumerate(reached)
    ]  # fmt: skip
    run = DrillRunFactory(
        drill=drill, trigger=DrillTrigger.SCHEDULE, slot=started, state=JobState.FAILED, outcome=DrillOutcome.FAILED,
        failed_step=DrillStep.VERIFIED, reason="2 transient not recovered (back in the DLQ)", started_at=started,
        finished_at=started + timedelta(seconds=9), steps=steps, injected=6, dead_lettered=3, captured=3, replayed=2,
        recovered=0, lost=0, duplicates=0, unexplained_duplicates=0, time_to_capture_seconds=1.1,
        expectations=[{"name": "recovered", "step": "verified", "expected": 2, "actual": 0, "ok": False},
                      {"name": "lost", "step": "verified", "expected": 0, "actual": 0, "ok": True}],
    )  # fmt: skip
    Drill.objects.filter(pk=drill.pk).update(last_run_at=run.finished_at, last_outcome=DrillOutcome.FAILED)
    return run


def test_define_approve_run_and_follow_a_drill(live_server, make_user, rabbit, jobs, people) -> None:
    base = live_server.url
    default_rules_install(actor="test")  # the drill's classified step checks the categories they assign
    make_user(Role.OPERATOR, Role.APPROVER, username="olga")  # an approver too: four eyes must still hold
    make_user(Role.APPROVER, username="abe")
    make_user(Role.VIEWER, username="vera")
    name = unique("browser", 6)

    # -- the operator defines a drill: an invalid cron expression is refused on its field --------
    page = people.sign_in("olga")
    page.get_by_role("link", name="Drills").click()
    expect(page.get_by_test_id("drills")).to_contain_text("No drill is defined yet")
    page.get_by_test_id("drill-new").click()
    form = page.get_by_test_id("drill-form")
    expect(form.get_by_label("Messages injected (N)")).to_have_value("6")  # the defaults are offered
    form.get_by_label("Name").fill(name)
    form.get_by_label("Broker").select_option(label=str(rabbit.broker))
    form.get_by_label("Schedule (cron, UTC)").fill("61 * * * *")
    form.get_by_label("Timeout (s)").fill("120")
    page.get_by_test_id("drill-save").click()
    expect(page.get_by_test_id("error-schedule")).to_contain_text("'61 * * * *' is not a valid cron expression")
    assert not Drill.objects.exists()
    expect(form.get_by_label("Name")).to_have_value(name)  # what was typed comes back
    form.get_by_label("Schedule (cron, UTC)").fill("*/30 * * * *")
    page.get_by_test_id("drill-save").click()
    expect(page.locator(".messages")).to_contain_text(f"Drill {name} defined")
    drill = Drill.objects.get()
    assert (drill.work_queue, drill.dead_letter_queue) == (f"drill-{name}-work", f"drill-{name}-dlq")
    expect(page.get_by_test_id("drill-approval")).to_contain_text("not approved")
    expect(page.get_by_test_id("approval-note")).to_contain_text("The author of a drill cannot approve it")
    expect(page.get_by_test_id("drill-approve")).to_have_count(0)
    expect(page.get_by_test_id("run-now-blocked")).to_be_visible()

    # -- an approver approves it ------------------------------------------------------------------
    approver = people.sign_in("abe")
    approver.get_by_role("link", name="Drills").click()
    approver.locator(f"tr[data-drill='{name}'] a").first.click()
    expect(approver.get_by_test_id("drill-template")).to_contain_text("50 msg/s · batches of 10 · 1 worker")
    approver.get_by_test_id("approve-comment").fill("template and queues checked")
    approver.get_by_test_id("drill-approve").click()
    expect(approver.get_by_test_id("drill-approval")).to_contain_text("approved by abe")
    expect(approver.get_by_test_id("drill-approval")).to_contain_text("template and queues checked")
    expect(approver.get_by_test_id("drill-approve")).to_have_count(0)
    expect(approver.get_by_test_id("drill-run-now")).to_have_count(0)  # approving is not running

    # -- the operator runs it now and watches it pass without reloading ----------------------------
    page.reload()
    expect(page.get_by_test_id("drill-approval")).to_have_attribute("data-approved", "true")
    page.get_by_test_id("drill-run-now").click()
    expect(page.get_by_test_id("drill-run-state")).to_have_text("Queued")
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    jobs.start()
    expect(page.get_by_test_id("drill-run-state")).to_have_text(re.compile("Running|Replaying|Passed"))
    expect(page.get_by_test_id("drill-run-state")).to_have_text("Passed", timeout=90_000)
    assert page.evaluate("window.sameDocument") is True
    run = DrillRun.objects.get(drill=drill)
    steps = page.get_by_test_id("drill-steps")
    expect(steps.locator("tr[data-status=ok]")).to_have_count(len(STEPS))
    for step in ("injected", "dead_lettered", "captured", "classified", "replayed", "verified"):
        expect(steps.locator(f"tr[data-step={step}] [data-testid=step-seconds]")).to_have_text(
            re.compile(r"\d+\.\d\d s")
        )
    expect(page.get_by_test_id("steps-chart").locator("rect")).to_have_count(len(STEPS))
    expect(page.get_by_test_id("drill-expectations").locator("tr[data-ok=false]")).to_have_count(0)
    expect(page.get_by_test_id("drill-run-lost")).to_have_text("0")
    expect(page.get_by_test_id("drill-run-ttr")).to_contain_text(" s")
    replay = page.get_by_test_id("drill-run-replay")
    expect(replay.get_by_role("link", name=f"plan {run.plan_id}")).to_have_attribute("href", f"/plans/{run.plan_id}/")
    expect(replay.get_by_role("link", name=f"replay run {run.replay_run_id}")).to_have_attribute(
        "href", f"/runs/{run.replay_run_id}/"
    )
    jobs.stop()
    assert not DrillRun.objects.filter(state__in=DRILL_RUN_ACTIVE).exists()

    # -- a failing run: its page names the failing step; history, trend and overview show it -------
    failed = _failed_run(drill)
    page.get_by_role("link", name=drill.name).click()
    history = page.get_by_test_id("drill-history")
    expect(history.locator("tr[data-run]")).to_have_count(2)
    expect(history.locator(f"tr[data-run='{failed.pk}']")).to_contain_text("Failed at Verified")
    expect(page.get_by_test_id("pass-rate")).to_have_text("50%")
    chart = page.get_by_test_id("ttr-chart")
    expect(chart.locator("rect[data-state=passed]")).to_have_count(1)
    expect(chart.locator("rect[data-state=failed]")).to_have_count(1)
    expect(page.get_by_test_id("pass-rate-chart").locator("circle")).to_have_count(2)
    history.locator(f"tr[data-run='{failed.pk}'] a").first.click()
    expect(page.get_by_test_id("failed-step")).to_contain_text("step Verified: 2 transient not recovered")
    expect(page.get_by_test_id("drill-steps").locator("tr[data-status=failed]")).to_have_attribute(
        "data-step", "verified"
    )
    expect(page.locator("tr[data-expectation=recovered]")).to_have_attribute("data-ok", "false")
    page.get_by_role("link", name="Overview").click()
    failing = page.get_by_test_id("failing-drills")
    expect(failing.locator(f"tr[data-drill='{name}']")).to_contain_text("Verified")

    # -- a viewer sees the drill without controls and cannot act by posting ------------------------
    viewer = people.sign_in("vera")
    viewer.get_by_test_id("failing-drills").get_by_role("link", name=name).click()
    expect(viewer.get_by_test_id("drill-history").locator("tr[data-run]")).to_have_count(2)
    expect(viewer.get_by_test_id("drill-actions")).to_have_count(0)
    assert post(viewer, f"{base}/drills/{drill.pk}/run/") == 403
    assert post(viewer, f"{base}/drills/{drill.pk}/approve/") == 403
    assert DrillRun.objects.filter(drill=drill).count() == 2
